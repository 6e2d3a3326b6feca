package broadcast

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
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
}

func (h *Hub) newListener(w http.ResponseWriter, cancel context.CancelCauseFunc) *listener {
	l := &listener{
		w: w, rc: http.NewResponseController(w), cancel: cancel,
		frames: h.frames, bufs: &h.bufs, limit: h.opts.BufferBytes, timeout: h.opts.WriteTimeout,
		header:  http.Header{},
		pending: []*frame{retryFrame}, // sent at r3labs' first Flush, once subscribed
		bytes:   len(retryFrame.b),
	}
	l.drainFn = l.drain
	return l
}

func (l *listener) Header() http.Header { return l.header }
func (l *listener) WriteHeader(int)     {}

// Write receives what r3labs prints for one event, "id: \n", "data: <seq>\n",
// "\n", or for a heartbeat ": hb\n", "\n", and queues the matching shared
// frame. The id line and the blank lines carry nothing: there are no ids
// (nothing is replayed) and frames end with their own blank line.
func (l *listener) Write(p []byte) (int, error) {
	switch {
	case bytes.HasPrefix(p, []byte("data: ")):
		seq, ok := parseSeq(p[len("data: "):])
		f := l.frames.get(seq)
		if !ok || f == nil {
			l.drop(errLost)
			break
		}
		l.enqueue(f)
	case bytes.HasPrefix(p, []byte(": ")):
		l.enqueue(heartbeatFrame)
	}
	return len(p), nil
}

// parseSeq reads the decimal sequence number r3labs printed, up to the
// newline. Hand-rolled: it runs once per delivery and must not allocate.
func parseSeq(b []byte) (uint64, bool) {
	var n uint64
	digits := 0
	for _, c := range b {
		if c == '\n' {
			break
		}
		if c < '0' || c > '9' || digits == 19 {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
		digits++
	}
	return n, digits > 0
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

// Flush marks the end of one event: start a drain unless one is running.
func (l *listener) Flush() {
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
// to maxBatch bytes. Each write runs under a write deadline, so a socket
// that takes nothing fails the write within WRITE_TIMEOUT, while a slow
// reader that keeps taking maxBatch bytes per WRITE_TIMEOUT stays.
func (l *listener) writeFrames(batch []*frame) error {
	err := l.writeAll(batch)
	if err == nil {
		l.arm()
		err = l.rc.Flush()
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ErrStalled
	default:
		return errClientGone
	}
}

// arm pushes the write deadline to timeout from now, at most once per
// refresh (it costs a timer update), so a blocked write fails between
// timeout-refresh and timeout after it started.
func (l *listener) arm() {
	refresh := min(time.Second, l.timeout/4)
	if now := time.Now(); now.Sub(l.deadlineAt) > refresh {
		_ = l.rc.SetWriteDeadline(now.Add(l.timeout))
		l.deadlineAt = now
	}
}

func (l *listener) writeAll(batch []*frame) error {
	if len(batch) == 1 { // the common case: no copy
		l.arm()
		_, err := l.w.Write(batch[0].b)
		return err
	}
	buf := l.bufs.get()
	defer l.bufs.put(buf)
	for i, f := range batch {
		*buf = append(*buf, f.b...)
		if len(*buf) >= maxBatch || i == len(batch)-1 {
			l.arm()
			if _, err := l.w.Write(*buf); err != nil {
				return err
			}
			*buf = (*buf)[:0]
		}
	}
	return nil
}

// finish runs after r3labs has let go of the listener and returns why the
// stream ended. When the server ended it (shutdown, maximum duration) it
// writes what is still queued and a jittered retry hint, so clients
// reconnect spread out.
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
	hint := strconv.AppendInt([]byte("retry: "), 1000+rand.Int64N(2000), 10)
	_ = l.writeFrames(append(batch, &frame{b: append(hint, "\n\n"...)}))
	return cause
}

// jitter returns d shifted by a random amount within ±15%.
func jitter(d time.Duration) time.Duration {
	spread := int64(d) * 3 / 10
	if spread <= 0 {
		return d
	}
	return d - time.Duration(spread/2) + time.Duration(rand.Int64N(spread+1))
}

// Serve streams events to w until the client leaves, the listener is
// dropped, its maximum duration passes or the hub closes, and returns why
// the stream ended. The caller sets the response headers; nothing is
// written before the listener is subscribed, so a client that has read the
// first line will receive every event published afterwards. ErrTooMany and
// ErrClosed come back before anything is written.
func (h *Hub) Serve(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	l := h.newListener(w, cancel)
	if err := h.add(l); err != nil {
		return err
	}
	defer h.remove(l)
	if d := h.opts.MaxStreamDuration; d > 0 {
		t := time.AfterFunc(jitter(d), func() { cancel(ErrMaxDuration) })
		defer t.Stop()
	}
	log := h.log.With().Str("remote", r.RemoteAddr).Str("user_agent", r.UserAgent()).Logger()
	log.Info().Int64("listeners", h.active.Load()).Msg("listener connected")

	h.subscribe(ctx, l) // returns once r3labs has unsubscribed l
	cause := l.finish(context.Cause(ctx))

	switch {
	case errors.Is(cause, ErrSlow), errors.Is(cause, ErrStalled), errors.Is(cause, errLost):
		h.dropped.Add(1)
		log.Warn().Str("reason", cause.Error()).Msg("listener dropped")
	case errors.Is(cause, context.Canceled):
		log.Info().Str("reason", errClientGone.Error()).Msg("listener disconnected")
	default:
		log.Info().Str("reason", cause.Error()).Msg("listener disconnected")
	}
	return cause
}

func (h *Hub) add(l *listener) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.draining:
		return ErrClosed
	case h.active.Load() >= int64(h.opts.MaxListeners):
		return ErrTooMany
	}
	h.active.Add(1)
	h.listeners[l] = struct{}{}
	h.gone.Add(1) // under mu with the draining check, so never after Close's Wait began
	return nil
}

func (h *Hub) remove(l *listener) {
	h.mu.Lock()
	delete(h.listeners, l)
	h.active.Add(-1)
	h.mu.Unlock()
	h.gone.Done()
}
