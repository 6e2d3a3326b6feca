package broadcast

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"
)

var errClientGone = errors.New("client went away")

// errLost reports what cannot happen, should it ever: a listener was
// handed a frame number the hub had already released (frames stay until
// every member of the shard has taken them). The listener is dropped
// rather than silently missing an event.
var errLost = errors.New("dropped: an event it was handed was already released")

// listener is one subscriber's queue of shared frames and the drain that
// writes them to its client; it knows nothing of r3labs or of the wire
// format, which its sink owns. Its r3labs side, the [subscription] that
// fills it, is in r3labs.go.
//
// Who owns what:
//   - set before subscribing, then only read: which sink out is, cancel, frames,
//     bufs, limit, timeout, filter;
//   - mu guards the queue (pending, bytes, spare) and its state (writing,
//     dead, reason): the r3labs loop of the listener's subscription fills
//     it (enqueue, enqueueRange) and starts the drain (startDrain), the
//     drain goroutine empties it, any goroutine may drop it;
//   - out, the client's connection, is written by one goroutine at a time:
//     the drain (writing is set), then finish once the drain has settled;
//   - sent is added to by that writer and read by scrapes.
type listener struct {
	out     sink // the client's connection, written only by drain and finish
	cancel  context.CancelCauseFunc
	frames  *frameRing
	bufs    *writeBuffers
	limit   int
	timeout time.Duration
	filter  *Filter // nil: every event

	mu      sync.Mutex
	pending []*frame // not yet handed to the socket
	bytes   int      // size of pending
	spare   []*frame // drained slice kept for reuse
	writing bool     // a drain goroutine is running
	dead    bool     // dropped or failed: discard everything
	reason  error    // why it died; the context may already carry net/http's own cancellation
	drainer sync.WaitGroup
	drainFn func() // l.drain, bound once: "go l.drain()" would allocate per event

	sent sentCounter
	sse  sseSink // out for an SSE stream: kept here, saving an allocation
}

// init makes l a queue that drains into out, or, when out is nil, into w
// as an SSE stream. l is part of its subscription's allocation.
func (l *listener) init(h *Hub, w http.ResponseWriter, out sink, cancel context.CancelCauseFunc) {
	l.out, l.cancel = out, cancel
	l.frames, l.bufs, l.limit, l.timeout = h.frames, &h.bufs, h.opts.BufferBytes, h.opts.WriteTimeout
	if out == nil {
		l.sse = sseSink{w: w, rc: http.NewResponseController(w), l: l}
		l.out = &l.sse
		first := retryFrame() // sent at the first startDrain, once subscribed
		l.pending, l.bytes = []*frame{first}, len(first.b)
	}
	l.drainFn = l.drain
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

// startDrain starts a drain goroutine for what is queued unless one is
// running. Called by the one goroutine that fills the queue, which is also
// the one that later calls finish: drainer's Add and Wait never race.
func (l *listener) startDrain() {
	l.mu.Lock()
	start := !l.writing && !l.dead && len(l.pending) > 0
	l.writing = l.writing || start
	l.mu.Unlock()
	if start {
		l.drainer.Add(1)
		go l.drainFn()
	}
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

// drain writes everything queued, in as few writes as possible, and exits
// when the queue is empty: an idle listener costs no goroutine.
func (l *listener) drain() {
	defer l.drainer.Done()
	for {
		l.mu.Lock()
		if !l.dead && len(l.pending) == 0 && l.out.armed() {
			// Still the only writer (writing is set): clear the deadline,
			// then look again for frames queued meanwhile.
			l.mu.Unlock()
			l.out.disarm()
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

		err := l.out.write(batch)
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

// finish runs once nothing fills the queue any more (r3labs has let go of
// the subscription) and returns why the stream ended. When the server
// ended it (shutdown, maximum duration) it writes what is still queued
// and, on an SSE stream, a comment saying why; clients reconnect after the
// jittered delay of the stream's first block.
func (l *listener) finish(cause error) error {
	l.out.settle(&l.drainer)
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
	if end := l.out.end(cause); end != nil {
		batch = append(batch, end)
	}
	if len(batch) > 0 {
		_ = l.out.write(batch) // counts what it wrote
	}
	return cause
}
