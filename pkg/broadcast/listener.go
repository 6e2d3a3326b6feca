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

// retryHint is the reconnection delay sent when a stream opens.
const retryHint = "retry: 2000\n\n"

// spareMax is the largest drained buffer kept for reuse; a burst that grew
// one beyond it gives the memory back.
const spareMax = 64 << 10

var errClientGone = errors.New("client went away")

// listener is the http.ResponseWriter the r3labs loop of one subscriber
// writes to. Its writes only append to a byte-capped queue, so that loop,
// and with it the hub's fan-out, never waits on this client's socket.
type listener struct {
	w       http.ResponseWriter // the real response, written only by drain and finish
	rc      *http.ResponseController
	cancel  context.CancelCauseFunc
	limit   int
	timeout time.Duration
	header  http.Header // what r3labs sets here is discarded; the caller set the real headers

	mu      sync.Mutex
	pending []byte // bytes not yet handed to the socket
	spare   []byte // drained buffer kept for reuse
	writing bool   // a drain goroutine is running
	dead    bool   // dropped or failed: discard everything
	reason  error  // why it died; the context may already carry net/http's own cancellation
	drainer sync.WaitGroup
	drainFn func() // l.drain, bound once: "go l.drain()" would allocate per event

	deadlineAt time.Time // when the write deadline was last pushed; drain and finish only
}

func newListener(w http.ResponseWriter, cancel context.CancelCauseFunc, limit int, timeout time.Duration) *listener {
	l := &listener{
		w: w, rc: http.NewResponseController(w), cancel: cancel, limit: limit, timeout: timeout,
		header:  http.Header{},
		pending: []byte(retryHint), // sent at r3labs' first Flush, once subscribed
	}
	l.drainFn = l.drain
	return l
}

func (l *listener) Header() http.Header { return l.header }
func (l *listener) WriteHeader(int)     {}

// Write queues p. r3labs writes an event as "id: \n", "data: ...\n", "\n";
// the empty id line is dropped (there are no ids: nothing is replayed).
func (l *listener) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, []byte("id: ")) {
		return len(p), nil
	}
	l.mu.Lock()
	if l.dead {
		l.mu.Unlock()
		return len(p), nil
	}
	if len(l.pending)+len(p) > l.limit {
		l.dead, l.pending, l.reason = true, nil, ErrSlow
		l.mu.Unlock()
		l.cancel(ErrSlow)
		return len(p), nil
	}
	l.pending = append(l.pending, p...)
	l.mu.Unlock()
	return len(p), nil
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
		buf := l.pending
		l.pending, l.spare = l.spare[:0], nil
		l.mu.Unlock()

		err := l.writeOut(buf)

		l.mu.Lock()
		if err != nil {
			l.dead, l.pending, l.writing, l.reason = true, nil, false, err
			l.mu.Unlock()
			l.cancel(err)
			return
		}
		if cap(buf) <= spareMax {
			l.spare = buf[:0]
		}
		l.mu.Unlock()
	}
}

// writeOut writes and flushes buf under a write deadline. The deadline is
// pushed at most every refresh, so a write blocked on a full socket fails
// between timeout-refresh and timeout after it started.
func (l *listener) writeOut(buf []byte) error {
	refresh := min(time.Second, l.timeout/4)
	if now := time.Now(); now.Sub(l.deadlineAt) > refresh {
		_ = l.rc.SetWriteDeadline(now.Add(l.timeout))
		l.deadlineAt = now
	}
	_, err := l.w.Write(buf)
	if err == nil {
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

// finish runs after r3labs has let go of the listener and returns why the
// stream ended. When the server ended it (shutdown, maximum duration) it
// writes what is still queued and a jittered retry hint, so clients
// reconnect spread out.
func (l *listener) finish(cause error) error {
	l.drainer.Wait()
	l.mu.Lock()
	buf, dead := l.pending, l.dead
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
	buf = append(buf, "retry: "...)
	buf = strconv.AppendInt(buf, 1000+rand.Int64N(2000), 10)
	_ = l.writeOut(append(buf, "\n\n"...))
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
	l := newListener(w, cancel, h.opts.BufferBytes, h.opts.WriteTimeout)
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
	case errors.Is(cause, ErrSlow), errors.Is(cause, ErrStalled):
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
