// Package broadcast fans events out to SSE listeners through the r3labs/sse
// hub, built so that no listener can slow down another or a publisher.
//
// The r3labs stream has one fan-out goroutine that blocks on each
// subscriber's 64-slot channel, and its per-subscriber loop writes straight
// to the socket, so one listener that stops reading would wedge everyone.
// Here the r3labs loop writes into a [listener]: an in-memory, byte-capped
// queue that never blocks. A separate short-lived goroutine per listener
// drains the queue to the socket under a write deadline, coalescing whatever
// queued up meanwhile into one write and one flush. A listener whose queue
// overflows or whose socket stalls is dropped instead of slowing the hub.
package broadcast

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/r3labs/sse/v2"
	"github.com/rs/zerolog"
)

// streamID is the single r3labs stream every listener subscribes to.
const streamID = "events"

// Errors from [Hub.Publish] and [Hub.Serve].
var (
	ErrBusy    = errors.New("the broadcast queue is full")
	ErrClosed  = errors.New("the service is shutting down")
	ErrTooMany = errors.New("too many listeners")
)

// Reasons a stream ended, passed as the cause of its context.
var (
	ErrSlow        = errors.New("dropped: too slow, send buffer full")
	ErrStalled     = errors.New("dropped: socket accepted nothing within the write timeout")
	ErrMaxDuration = errors.New("stream reached its maximum duration")
	ErrShutdown    = errors.New("server shutting down")
)

// Options configure a Hub. Zero durations disable the matching feature.
type Options struct {
	QueueSize         int           // events waiting for fan-out before Publish fails with ErrBusy
	MaxListeners      int           // concurrent listeners before Serve fails with ErrTooMany
	BufferBytes       int           // bytes queued for one listener before it is dropped
	WriteTimeout      time.Duration // a socket accepting nothing this long is dropped
	Heartbeat         time.Duration // comment keep-alive period
	MaxStreamDuration time.Duration // end streams after about this long
	StallAfter        time.Duration // fan-out lag that makes Healthy false; default 5s
	Logger            zerolog.Logger
}

// Stats are the hub's counters since start.
type Stats struct {
	Listeners        int64  `json:"listeners"`
	EventsAccepted   uint64 `json:"events_accepted"`
	EventsBusy       uint64 `json:"events_refused_busy"`
	ListenersDropped uint64 `json:"listeners_dropped"`
	FanoutLag        int64  `json:"fanout_lag_events"`
}

// Hub is the broadcast hub. Create it with [New] and stop it with
// [Hub.Close].
type Hub struct {
	opts Options
	log  zerolog.Logger
	sse  *sse.Server

	// pubMu orders publishes: a frame's sequence number, its place in the
	// ring and its place in the r3labs queue are taken together, which is
	// what bounds how far the ring must reach back. Close sets closed under it.
	pubMu  sync.Mutex
	seq    uint64
	closed bool
	frames *frameRing
	bufs   writeBuffers
	subReq *http.Request // template, see subscribeRequest

	mu        sync.Mutex // guards listeners and draining
	listeners map[*listener]struct{}
	draining  bool
	active    atomic.Int64
	gone      sync.WaitGroup // one per listener, for Close

	accepted, busy, dropped atomic.Uint64
	sent                    atomic.Uint64 // everything handed to r3labs, heartbeats included
	probe                   *probe
	stop                    context.CancelFunc
	bg                      sync.WaitGroup
}

// New starts a hub: the r3labs server with its replay log disabled, the
// liveness probe and the heartbeat.
func New(opts Options) *Hub {
	if opts.StallAfter <= 0 {
		opts.StallAfter = 5 * time.Second
	}
	s := sse.New()
	s.AutoReplay = false // its event log keeps every event forever
	s.AutoStream = false
	s.BufferSize = opts.QueueSize
	s.CreateStream(streamID)

	ctx, stop := context.WithCancel(context.Background())
	h := &Hub{
		opts: opts, log: opts.Logger, sse: s, listeners: map[*listener]struct{}{}, stop: stop,
		frames: newFrameRing(opts.QueueSize), subReq: subscribeRequest(),
	}
	h.probe = startProbe(ctx, h, &h.sent, opts.StallAfter, &h.bg)
	if opts.Heartbeat > 0 {
		h.bg.Add(1)
		go h.heartbeat(ctx)
	}
	return h
}

// Publish queues one event (compact JSON, no newline) for every listener.
// data is copied: the caller may reuse it. It never blocks: ErrBusy when
// the fan-out queue is full, ErrClosed after Close began.
func (h *Hub) Publish(data []byte) error {
	f := newFrame(data)
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	if h.closed {
		return ErrClosed
	}
	h.frames.put(f, h.seq+1)
	if !h.send(&f.ev) {
		h.busy.Add(1)
		return ErrBusy // f was not queued: its number is taken again by the next one
	}
	h.seq++
	h.accepted.Add(1)
	return nil
}

// send hands ev to r3labs without waiting. Called with pubMu held.
func (h *Hub) send(ev *sse.Event) bool {
	if !h.sse.TryPublish(streamID, ev) {
		return false
	}
	// Counted after the send: the probe may briefly have seen one more, but
	// the watchdog never waits for an event r3labs refused.
	h.sent.Add(1)
	return true
}

// heartbeat sends one comment through the hub each period, so every listener
// gets a byte well within common idle timeouts, and a wedged fan-out shows up
// in the probe even when no events flow.
func (h *Hub) heartbeat(ctx context.Context) {
	defer h.bg.Done()
	t := time.NewTicker(h.opts.Heartbeat)
	defer t.Stop()
	ev := &sse.Event{Comment: []byte("hb")} // shared: r3labs does not modify it without replay
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.pubMu.Lock()
			if !h.closed {
				h.send(ev)
			}
			h.pubMu.Unlock()
		}
	}
}

// Healthy reports whether the fan-out keeps up: false when an event handed
// to the hub more than StallAfter ago has still not been fanned out.
func (h *Hub) Healthy() bool { return !h.probe.wedged.Load() }

// Stats returns the current counters.
func (h *Hub) Stats() Stats {
	seen := int64(h.probe.seen.Load()) // first: sent only grows
	return Stats{
		Listeners:        h.active.Load(),
		EventsAccepted:   h.accepted.Load(),
		EventsBusy:       h.busy.Load(),
		ListenersDropped: h.dropped.Load(),
		FanoutLag:        max(0, int64(h.sent.Load())-seen),
	}
}

// Close ends the hub gracefully: it refuses new publishes and listeners,
// waits (within ctx) until everything accepted has been fanned out, then ends
// every stream after flushing what its listener has queued, and waits for
// the listeners' handlers to finish. Calling Close again is harmless.
func (h *Hub) Close(ctx context.Context) error {
	h.pubMu.Lock()
	h.closed = true
	h.pubMu.Unlock()
	h.mu.Lock()
	h.draining = true
	h.mu.Unlock()

	err := h.probe.waitCaughtUp(ctx, h.sent.Load())
	h.endAll(ErrShutdown)
	done := make(chan struct{})
	go func() { h.gone.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return errors.Join(err, ctx.Err())
	}
	// No subscriber is left, so stopping the r3labs stream leaks nothing.
	h.stop()
	h.bg.Wait()
	h.sse.Close()
	return err
}

func (h *Hub) endAll(cause error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for l := range h.listeners {
		l.cancel(cause)
	}
}

// subscribe feeds w from the r3labs stream until ctx ends.
func (h *Hub) subscribe(ctx context.Context, w http.ResponseWriter) {
	h.sse.ServeHTTP(w, h.subReq.WithContext(ctx))
}

// subscribeRequest is the request handed to r3labs for every subscription.
// r3labs only reads the stream name, Last-Event-ID (absent: nothing is
// replayed) and the context, so one read-only template serves everyone.
func subscribeRequest() *http.Request {
	return &http.Request{
		Method: http.MethodGet,
		URL:    &url.URL{RawQuery: "stream=" + streamID},
		Header: http.Header{},
	}
}
