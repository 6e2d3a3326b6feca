package broadcast

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"sync"
	"time"
)

var errClientGone = errors.New("client went away")

// errLost reports a listener whose r3labs loop looked up a frame that was
// already gone; the ring is sized so that this cannot happen, and should it
// ever, the listener is dropped rather than silently missing an event.
var errLost = errors.New("dropped: fell behind the frame ring")

// listener is the http.ResponseWriter the r3labs loop of one subscriber
// writes to. Its writes only queue a shared frame, so that loop, and with it
// the hub's fan-out, never waits on this client's socket.
type listener struct {
	w       http.ResponseWriter // the real response, written only by drain and finish
	rc      *http.ResponseController
	cancel  context.CancelCauseFunc
	frames  *frameRing
	bufs    *writeBuffers
	limit   int
	timeout time.Duration
	header  http.Header // what r3labs sets here is discarded; the caller set the real headers
	sh      *shard
	filter  *Filter // nil: every event; set before subscribing, then only read

	// Owned by the r3labs loop (the Serve goroutine): see shard.
	confirmed bool   // registered with r3labs: its first Flush has come
	joined    uint64 // the shard's batch in flight when it registered
	taken     uint64 // last batch it took

	mu      sync.Mutex
	pending []*frame // not yet handed to the socket
	bytes   int      // size of pending
	spare   []*frame // drained slice kept for reuse
	writing bool     // a drain goroutine is running
	dead    bool     // dropped or failed: discard everything
	reason  error    // why it died; the context may already carry net/http's own cancellation
	drainer sync.WaitGroup
	drainFn func() // l.drain, bound once: "go l.drain()" would allocate per event

	deadlineAt time.Time // when the write deadline was last pushed; drain and finish only
	cutAt      time.Time // set by the hub's Close: no write may outlast it; guarded by mu
	// disarmIdle clears the write deadline whenever the queue empties.
	// HTTP/2 resets a stream the moment its write deadline passes, writing
	// or not: a quiet stream (no events, heartbeats rarer than
	// WRITE_TIMEOUT) would be cut. HTTP/1 only fails a write started after
	// it, so there the deadline stays, pushed at most once per refresh.
	disarmIdle bool
	sent       sentCounter
}

func (h *Hub) newListener(w http.ResponseWriter, cancel context.CancelCauseFunc) *listener {
	first := retryFrame() // sent at r3labs' first Flush, once subscribed
	l := &listener{
		w: w, rc: http.NewResponseController(w), cancel: cancel,
		frames: h.frames, bufs: &h.bufs, limit: h.opts.BufferBytes, timeout: h.opts.WriteTimeout,
		header:  http.Header{},
		pending: []*frame{first},
		bytes:   len(first.b),
	}
	l.drainFn = l.drain
	return l
}

func (l *listener) Header() http.Header { return l.header }
func (l *listener) WriteHeader(int)     {}

// Write receives what r3labs prints for one batch, "id: \n",
// "data: <first>-<last>\n", "\n", or for a heartbeat ": hb\n", "\n", and
// queues the matching shared frames. The id line and the blank lines carry
// nothing: there are no ids (nothing is replayed) and frames end with their
// own blank line.
func (l *listener) Write(p []byte) (int, error) {
	switch {
	case bytes.HasPrefix(p, []byte("data: ")):
		first, last, ok := parseRange(p[len("data: "):])
		if !ok {
			l.drop(errLost)
			break
		}
		l.enqueueRange(first, last)
		l.sh.took(l, last)
	case bytes.HasPrefix(p, []byte(": ")):
		l.enqueue(heartbeatFrame)
	}
	return len(p), nil
}

// enqueueRange queues the frames numbered first to last.
func (l *listener) enqueueRange(first, last uint64) {
	l.mu.Lock()
	var reason error
	for seq := first; seq <= last && !l.dead; seq++ {
		f := l.frames.get(seq)
		if f == nil {
			reason = errLost
			break
		}
		if !l.filter.keeps(f) { // heartbeats are queued by enqueue: always
			continue
		}
		if l.bytes+len(f.b) > l.limit {
			reason = ErrSlow
			break
		}
		l.pending = append(l.pending, f)
		l.bytes += len(f.b)
	}
	l.mu.Unlock()
	if reason != nil {
		l.drop(reason)
	}
}

func (l *listener) enqueue(f *frame) {
	l.mu.Lock()
	switch {
	case l.dead:
	case l.bytes+len(f.b) > l.limit:
		l.mu.Unlock()
		l.drop(ErrSlow)
		return
	default:
		l.pending = append(l.pending, f)
		l.bytes += len(f.b)
	}
	l.mu.Unlock()
}

// drop discards everything queued and ends the stream for reason.
func (l *listener) drop(reason error) {
	l.mu.Lock()
	first := l.kill(reason)
	l.mu.Unlock()
	if first {
		l.cancel(reason)
	}
}

// kill marks the listener dead; true the first time. Called with mu held.
func (l *listener) kill(reason error) bool {
	if l.dead {
		return false
	}
	clear(l.pending)
	l.dead, l.pending, l.bytes, l.reason = true, nil, 0, reason
	return true
}

// Flush marks the end of one batch: start a drain unless one is running.
// The first Flush comes from r3labs once the subscription is registered.
func (l *listener) Flush() {
	if !l.confirmed {
		l.confirmed = true
		l.sh.confirm(l)
	}
	l.mu.Lock()
	start := !l.writing && !l.dead && len(l.pending) > 0
	l.writing = l.writing || start
	l.mu.Unlock()
	if start {
		// Add happens on the r3labs loop's goroutine, which is also the one
		// that later calls drainer.Wait, so the two never race.
		l.drainer.Add(1)
		go l.drainFn()
	}
}

// drain writes everything queued, in as few writes as possible, and exits
// when the queue is empty: an idle listener costs no goroutine.
func (l *listener) drain() {
	defer l.drainer.Done()
	for {
		l.mu.Lock()
		if !l.dead && len(l.pending) == 0 && l.disarmIdle && !l.deadlineAt.IsZero() {
			// Still the only writer (writing is set): clear the deadline,
			// then look again for frames queued meanwhile.
			l.mu.Unlock()
			_ = l.rc.SetWriteDeadline(time.Time{})
			l.deadlineAt = time.Time{}
			continue
		}
		if l.dead || len(l.pending) == 0 {
			l.writing = false
			l.mu.Unlock()
			return
		}
		batch := l.pending
		l.pending, l.bytes, l.spare = l.spare[:0], 0, nil
		l.mu.Unlock()

		err := l.writeFrames(batch)
		clear(batch) // let the frames go
		if err != nil {
			// Dead and not writing in one step, so no Flush can start
			// another write on the socket that just failed.
			l.mu.Lock()
			l.writing = false
			first := l.kill(err)
			l.mu.Unlock()
			if first {
				l.cancel(err)
			}
			return
		}
		l.mu.Lock()
		if cap(batch) <= 1024 {
			l.spare = batch[:0]
		}
		l.mu.Unlock()
	}
}

// writeFrames writes and flushes batch, coalescing frames into writes of up
// to maxBatch bytes, and counts what the socket took. Each write runs under
// a write deadline, so a socket that takes nothing fails the write within
// WRITE_TIMEOUT, while a slow reader that keeps taking maxBatch bytes per
// WRITE_TIMEOUT stays.
func (l *listener) writeFrames(batch []*frame) error {
	last, err := l.writeAll(batch)
	if err == nil {
		l.arm()
		err = l.rc.Flush()
	}
	if err == nil {
		l.sent.add(last)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded): // over HTTP/2 too: net/http reports the stream's reset so
		return ErrStalled
	default:
		return errClientGone
	}
}

// arm pushes the write deadline to timeout from now, at most once per
// refresh (it costs a timer update), so a blocked write fails between
// timeout-refresh and timeout after it started.
//
// Once the hub's Close has set a cut-off, the deadline is that and stays.
func (l *listener) arm() {
	refresh := min(time.Second, l.timeout/4)
	if now := time.Now(); now.Sub(l.deadlineAt) > refresh {
		l.mu.Lock()
		if l.cutAt.IsZero() {
			_ = l.rc.SetWriteDeadline(now.Add(l.timeout))
		}
		l.mu.Unlock()
		l.deadlineAt = now
	}
}

// cut makes every write, the one under way included, fail at deadline (an
// earlier one stays).
func (l *listener) cut(deadline time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.cutAt.IsZero() && !deadline.Before(l.cutAt) {
		return
	}
	l.cutAt = deadline
	_ = l.rc.SetWriteDeadline(deadline)
}

// writeAll writes batch and returns the frames of its last write, which
// net/http may still hold until the flush. The frames of every earlier
// write are counted as sent as soon as it returns: a write of maxBatch bytes
// or more goes past net/http's buffers to the socket, so a client cut off
// later in a long batch has them, and the count says so.
func (l *listener) writeAll(batch []*frame) ([]*frame, error) {
	if len(batch) == 1 { // the common case: no copy
		l.arm()
		_, err := l.w.Write(batch[0].b)
		return batch, err
	}
	buf := l.bufs.get()
	defer l.bufs.put(buf)
	from := 0
	for i, f := range batch {
		*buf = append(*buf, f.b...)
		if i == len(batch)-1 {
			break
		}
		if len(*buf) >= maxBatch {
			l.arm()
			if _, err := l.w.Write(*buf); err != nil {
				return nil, err
			}
			l.sent.add(batch[from : i+1])
			from = i + 1
			*buf = (*buf)[:0]
		}
	}
	l.arm()
	_, err := l.w.Write(*buf)
	return batch[from:], err
}

// finish runs after r3labs has let go of the listener and returns why the
// stream ended. When the server ended it (shutdown, maximum duration) it
// writes what is still queued and a comment saying why; clients reconnect
// after the jittered delay of the stream's first block.
func (l *listener) finish(cause error) error {
	l.drainer.Wait()
	l.mu.Lock()
	batch, dead := l.pending, l.dead
	if l.reason != nil {
		// A failed write also cancels the request context inside net/http,
		// which can beat our cancel: the recorded reason is the true one.
		cause = l.reason
	}
	l.pending = nil
	l.mu.Unlock()
	if dead || (!errors.Is(cause, ErrShutdown) && !errors.Is(cause, ErrMaxDuration)) {
		return cause
	}
	batch = append(batch, endFrame(cause))
	_ = l.writeFrames(batch) // counts what it wrote
	return cause
}
