package broadcast

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// EventWriter is the way out of a subscription made with [Hub.Listen]: the
// client's connection in whatever protocol it speaks.
type EventWriter interface {
	// WriteEvents sends events, in order; each is one compact JSON value
	// as accepted by the hub, without framing or newline. The slices are
	// shared with other listeners: read them, never modify or keep them
	// after returning. It is called by one goroutine at a time, with at
	// most about 16 KiB of events (or one larger event) per call.
	//
	// It must return once ctx is done: ctx ends at the write timeout (or
	// the hub's shutdown deadline). A call still running then gets the
	// listener dropped as stalled.
	WriteEvents(ctx context.Context, events [][]byte) error
}

// Listen subscribes w to every event filter keeps (nil: every event) until
// ctx ends, the listener is dropped, its maximum duration passes or the
// hub closes, and returns what it wrote and why it ended, as [Hub.Serve]
// does for SSE. It is the protocol-neutral way to listen: the listener has
// the same queue as an SSE one, drained by its own goroutine so that it
// never slows the fan-out or other listeners, the same limits (counted in
// MaxListeners; dropped with ErrSlow past BufferBytes queued, with
// ErrStalled when a WriteEvents call outlasts WriteTimeout), the same
// filter, the same counters in [Hub.Counters], and the same ends
// (ErrShutdown after everything accepted before Close is written,
// ErrMaxDuration). Only the bytes are its own: no heartbeats, retry hints
// or end comments reach w; the caller sends its protocol's equivalents.
//
// Events published after Listen has subscribed reach w; ErrTooMany and
// ErrClosed come back before. The line logged once subscribed goes to the
// logger in ctx ([zerolog.Ctx]), if any.
//
// Listen may return while one WriteEvents call, past its deadline, still
// runs (a transport that ignores ctx): w is never called again, and the
// caller must end the transport (for gRPC, returning from the handler
// does), which is what makes that call return.
func (h *Hub) Listen(ctx context.Context, filter *Filter, w EventWriter) (Sent, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cutCtx, uncut := context.WithCancel(context.Background())
	defer uncut()
	out := &eventSink{w: w, cutCtx: cutCtx, uncut: uncut, stuck: make(chan struct{})}
	s := h.newSubscription(nil, out, cancel)
	out.l = &s.q
	return h.stream(ctx, cancel, s, filter, zerolog.Ctx(ctx))
}

// eventSink writes a listener's events to an EventWriter. Unlike a socket,
// an EventWriter cannot be given a deadline: each call gets a context that
// ends at it, and a watchdog drops the listener if the call outlasts it.
type eventSink struct {
	w EventWriter
	l *listener

	// cutCtx ends at the cut-off: every call's context derives from it, so
	// the cut reaches the call under way. Not the listener's context: a
	// stream ended by the server still gets what is queued.
	cutCtx context.Context
	uncut  context.CancelFunc

	lines   [][]byte    // reused between calls; writer only
	running atomic.Bool // a call is under way
	stuck   chan struct{}
	once    sync.Once // closes stuck
	cutoff  cutoff
}

func (s *eventSink) end(error) *frame { return nil }
func (s *eventSink) armed() bool      { return false } // each call has its own deadline
func (s *eventSink) disarm()          {}

func (s *eventSink) cut(deadline time.Time) {
	s.cutoff.set(deadline, func(d time.Time) { time.AfterFunc(time.Until(d), s.uncut) })
}

// settle waits for the drain, but not for a call that outlasted its
// deadline: the hub cannot make an EventWriter return. The listener is
// dead by then, so nothing else is written.
func (s *eventSink) settle(drainer *sync.WaitGroup) {
	done := make(chan struct{})
	go func() { drainer.Wait(); close(done) }()
	select {
	case <-done:
	case <-s.stuck:
	}
}

// write hands the events of batch to the writer in calls of up to about
// maxBatch bytes, leaving heartbeats and other unnumbered frames out.
func (s *eventSink) write(batch []*frame) error {
	defer func() { clear(s.lines[:cap(s.lines)]) }() // let the frames go
	s.lines = s.lines[:0]
	size := 0
	for i, f := range batch {
		if f.seq != 0 {
			s.lines = append(s.lines, f.json())
			size += len(s.lines[len(s.lines)-1])
		}
		if len(s.lines) > 0 && (size >= maxBatch || i == len(batch)-1) {
			if err := s.call(s.lines); err != nil {
				return err
			}
			s.l.sent.addEvents(len(s.lines), size)
			s.lines, size = s.lines[:0], 0
		}
	}
	return nil
}

// call runs one WriteEvents within the write timeout and the cut-off.
func (s *eventSink) call(lines [][]byte) error {
	ctx, cancel := context.WithTimeout(s.cutCtx, s.l.timeout)
	defer cancel()
	s.running.Store(true)
	stop := context.AfterFunc(ctx, func() {
		if s.running.Load() { // still running at its deadline: a stalled client, or the cut-off
			s.once.Do(func() { close(s.stuck) })
			s.l.drop(s.stalled())
		}
	})
	err := s.w.WriteEvents(ctx, lines)
	s.running.Store(false)
	stop()
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return s.stalled()
	case s.cutCtx.Err() != nil: // the server closed it at the same shutdown deadline
		return ErrCutAtShutdown
	default:
		return errClientGone
	}
}

// stalled names why a call ran out of time: the cut-off, or the write timeout.
func (s *eventSink) stalled() error {
	if s.cutCtx.Err() != nil {
		return ErrCutAtShutdown
	}
	return ErrStalled
}
