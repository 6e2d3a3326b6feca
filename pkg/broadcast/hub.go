// Package broadcast fans events out to SSE listeners through the r3labs/sse
// hub, built so that no listener can slow down another or a publisher, and
// so that listeners can still come and go while the fan-out is saturated.
//
// The path of one event:
//
//  1. [Hub.Publish] formats it once into a shared [frame], numbers it and
//     stores it in the frame ring. It is refused (ErrBusy) when the event
//     would wait longer than MaxLag for fan-out: the backlog is bounded in
//     time, whatever the number of listeners.
//  2. The pump (pump.go) hands runs of up to [batchSize] sequence numbers to
//     each shard in turn. A shard is one r3labs stream with its own fan-out
//     goroutine, holding a part of the listeners. Everything that knows
//     r3labs is in its adapter (r3labs.go).
//  3. r3labs' loop for each subscriber prints each run into the listener's
//     [subscription], the stand-in response r3labs writes to (r3labs.go),
//     which queues the matching shared frames in the [listener], a
//     byte-capped queue that knows nothing of r3labs (listener.go); it
//     never blocks. A frame leaves the ring once every listener has taken
//     it.
//  4. A short-lived goroutine per listener drains that queue to the client
//     (sink.go for SSE, listen.go for [Hub.Listen]) under a write deadline.
//     A listener whose queue overflows or whose client stalls is dropped
//     instead of slowing the hub.
package broadcast

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Errors from [Hub.Publish] and [Hub.Serve].
var (
	ErrBusy    = errors.New("the fan-out is saturated; retry shortly")
	ErrClosed  = errors.New("the service is shutting down")
	ErrTooMany = errors.New("too many listeners")
)

// Reasons a stream ended, passed as the cause of its context.
var (
	ErrSlow    = errors.New("dropped: too slow, send buffer full")
	ErrStalled = errors.New("dropped: socket accepted nothing within the write timeout")
	// ErrCutAtShutdown: the listener still had events to take when the
	// shutdown deadline passed. Not a drop: neither slow nor stalled.
	ErrCutAtShutdown = errors.New("cut at the shutdown deadline: the socket had not taken everything by then")
	ErrMaxDuration   = errors.New("stream reached its maximum duration")
	ErrShutdown      = errors.New("server shutting down")
)

// Options configure a Hub. The zero value of every field works: [New]
// replaces a zero size or timeout by the service's default, and a zero
// Heartbeat or MaxStreamDuration leaves that feature off.
type Options struct {
	QueueSize         int           // events waiting for fan-out before Publish fails with ErrBusy; default 16384
	QueueBytes        int64         // bytes of frames waiting for fan-out before Publish fails with ErrBusy; default 64 MiB
	MaxLag            time.Duration // age of the oldest waiting event beyond which Publish fails with ErrBusy; default 1s
	MaxListeners      int           // concurrent listeners before Serve fails with ErrTooMany; default 10000
	BufferBytes       int           // bytes queued for one listener before it is dropped; default 1 MiB
	WriteTimeout      time.Duration // a socket accepting nothing this long is dropped; default 10s
	Heartbeat         time.Duration // comment keep-alive period; zero: none
	MaxStreamDuration time.Duration // end streams after about this long; zero: never
	StallAfter        time.Duration // no fan-out progress this long, with work pending, makes Healthy false; default 5s
	Shards            int           // r3labs streams listeners are spread over; default 4 × GOMAXPROCS
	Logger            zerolog.Logger
}

// Defaults applied by [New] to zero fields.
const (
	DefaultQueueSize    = 16384
	DefaultQueueBytes   = 64 << 20
	DefaultMaxLag       = time.Second
	DefaultMaxListeners = 10000
	DefaultBufferBytes  = 1 << 20
	DefaultWriteTimeout = 10 * time.Second
	DefaultStallAfter   = 5 * time.Second
)

// withDefaults fills zero fields and rejects values no hub can work with.
func (o Options) withDefaults() (Options, error) {
	fill := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	fillDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	fill(&o.QueueSize, DefaultQueueSize)
	fill(&o.MaxListeners, DefaultMaxListeners)
	fill(&o.BufferBytes, DefaultBufferBytes)
	fill(&o.Shards, 4*runtime.GOMAXPROCS(0))
	fillDur(&o.MaxLag, DefaultMaxLag)
	fillDur(&o.WriteTimeout, DefaultWriteTimeout)
	fillDur(&o.StallAfter, DefaultStallAfter)
	if o.QueueBytes == 0 {
		o.QueueBytes = DefaultQueueBytes
	}
	var errs []error
	if o.QueueBytes < 0 {
		errs = append(errs, fmt.Errorf("broadcast: QueueBytes must not be negative, got %d", o.QueueBytes))
	}
	for name, v := range map[string]int{"QueueSize": o.QueueSize, "MaxListeners": o.MaxListeners, "BufferBytes": o.BufferBytes, "Shards": o.Shards} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("broadcast: %s must not be negative, got %d", name, v))
		}
	}
	for name, v := range map[string]time.Duration{"MaxLag": o.MaxLag, "WriteTimeout": o.WriteTimeout, "Heartbeat": o.Heartbeat,
		"MaxStreamDuration": o.MaxStreamDuration, "StallAfter": o.StallAfter} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("broadcast: %s must not be negative, got %s", name, v))
		}
	}
	return o, errors.Join(errs...)
}

// Stats are the hub's counters since start.
type Stats struct {
	Listeners        int64   `json:"listeners"`
	EventsAccepted   uint64  `json:"events_accepted"`
	EventsBusy       uint64  `json:"events_refused_busy"`
	ListenersDropped uint64  `json:"listeners_dropped"`
	FanoutLagEvents  int64   `json:"fanout_lag_events"`  // how many accepted events are not yet handed to every shard
	FanoutLagSeconds float64 `json:"fanout_lag_seconds"` // age of the oldest of those
	// The longest any event waited to be handed to every shard, since
	// start: a 503 for lag is justified only if this came near MaxLag.
	FanoutWaitMaxSeconds float64 `json:"fanout_wait_max_seconds"`
}

// Hub is the broadcast hub. Create it with [New] and stop it with
// [Hub.Close].
type Hub struct {
	opts Options
	log  zerolog.Logger
	fan  *fanout // r3labs, behind its adapter (r3labs.go)

	// pubMu orders publishes: a frame's sequence number and its place in the
	// ring are taken together. Close sets closed under it.
	pubMu  sync.Mutex
	closed bool
	seq    atomic.Uint64 // last sequence number published; written under pubMu
	queued uint64        // bytes of every frame published so far; under pubMu
	frames *frameRing
	bufs   writeBuffers

	pump *pump

	mu        sync.Mutex // guards listeners, draining and cutoff
	listeners map[*subscription]struct{}
	draining  bool
	cutoff    time.Time // set by Close: no write may outlast it
	active    atomic.Int64
	gone      sync.WaitGroup // one per listener, for Close

	accepted, busy, dropped atomic.Uint64
	tally                   tally // figures only metrics read, see counters.go
	stop                    context.CancelFunc
	bg                      sync.WaitGroup
}

// New starts a hub: its r3labs shards, with the replay log disabled, and
// the pump that feeds them.
func New(opts Options) (*Hub, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	h := &Hub{
		opts: opts, log: opts.Logger, fan: newFanout(), listeners: map[*subscription]struct{}{}, stop: stop,
		frames: newFrameRing(opts.QueueSize),
	}
	h.pump = newPump(h, opts)
	h.bg.Add(2)
	go func() { defer h.bg.Done(); h.pump.run(ctx) }()
	go func() { defer h.bg.Done(); h.releaseFrames(ctx) }()
	return h, nil
}

// Publish queues one event (compact JSON, no newline) for every listener.
// data is copied: the caller may reuse it. It never blocks: ErrBusy when
// the oldest event waiting for fan-out is older than MaxLag or QueueSize
// events or QueueBytes wait, ErrClosed after Close began.
func (h *Hub) Publish(data []byte) error {
	f := newFrame(data)
	now := time.Now()
	h.pubMu.Lock()
	if h.closed {
		h.pubMu.Unlock()
		return ErrClosed
	}
	seq := h.seq.Load()
	if h.pump.saturated(seq, h.queued, now) {
		h.pubMu.Unlock()
		h.busy.Add(1)
		return ErrBusy
	}
	f.at = now
	h.queued += uint64(len(f.b))
	f.queued = h.queued
	h.frames.put(f, seq+1)
	h.seq.Store(seq + 1)
	h.pubMu.Unlock()
	h.accepted.Add(1)
	h.pump.wake()
	return nil
}

// Healthy reports whether the fan-out makes progress: false only when work
// has been pending for StallAfter without a single hand-over to a shard. A
// hub that is behind but moving is healthy; its lag shows in [Hub.Stats].
func (h *Hub) Healthy() bool { return !h.pump.wedged(time.Now()) }

// Stats returns the current counters.
func (h *Hub) Stats() Stats {
	lag, age := h.pump.lag(time.Now())
	return Stats{
		Listeners:        h.active.Load(),
		EventsAccepted:   h.accepted.Load(),
		EventsBusy:       h.busy.Load(),
		ListenersDropped: h.dropped.Load(),
		FanoutLagEvents:  lag,
		FanoutLagSeconds: age.Seconds(),

		FanoutWaitMaxSeconds: time.Duration(h.pump.worst.Load()).Seconds(),
	}
}

// Close ends the hub gracefully: it refuses new publishes and listeners,
// waits (within ctx) until everything accepted has been handed to every
// shard, then ends every stream after flushing what its listener has
// queued, and waits for the listeners' handlers to finish. Calling Close
// again is harmless.
//
// Every write to a listener, the last ones included, ends by ctx's
// deadline whatever the write timeout: a listener that takes nothing is cut
// then, so its handler returns with the others and the caller's shutdown
// never outlasts its deadline. A ctx that ends without a deadline cuts them
// when it ends.
func (h *Hub) Close(ctx context.Context) error {
	h.pubMu.Lock()
	h.closed = true
	h.pubMu.Unlock()
	h.mu.Lock()
	h.draining = true
	h.mu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		h.cutAll(d)
	}

	// A listener ends only after its r3labs loop has written everything
	// handed to its shard before the end, so handed out is delivered.
	err := h.pump.waitHanded(ctx, h.seq.Load())
	h.endAll(ErrShutdown)
	done := make(chan struct{})
	go func() { h.gone.Wait(); close(done) }()
	select {
	case <-done:
		h.release()
		if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
			// Done only because the deadline cut what was still writing.
			return errors.Join(err, context.DeadlineExceeded)
		}
		return err
	case <-ctx.Done():
		// The streams are ended and their writes cut: each handler returns
		// as soon as its blocked write fails. Release what the hub runs once
		// they have, rather than never.
		h.cutAll(time.Now())
		go func() { <-done; h.release() }()
		return errors.Join(err, ctx.Err())
	}
}

// release stops what the hub runs. Only once no subscriber is left: a
// subscriber leaving a stopped r3labs stream would block forever.
func (h *Hub) release() {
	h.stop()
	h.bg.Wait()
	h.fan.close()
}

// cutAll makes every listener's writes, pending and future, fail at
// deadline.
func (h *Hub) cutAll(deadline time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cutoff = deadline
	for s := range h.listeners {
		s.q.out.cut(deadline)
	}
}

func (h *Hub) endAll(cause error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.listeners {
		s.q.cancel(cause)
	}
}

// releaseEvery is how often frames every listener has taken are released.
const releaseEvery = 50 * time.Millisecond

// releaseFrames lets go of the frames every listener's r3labs loop has
// taken (each listener's queue holds its own reference until written), so
// that memory follows the work: once delivered, or dropped, an event is
// garbage. It scans the listeners only while frames handed out are held.
func (h *Hub) releaseFrames(ctx context.Context) {
	t := time.NewTicker(releaseEvery)
	defer t.Stop()
	var released uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		target := h.pump.handed.Load()
		if target == released {
			continue
		}
		for _, sh := range h.pump.shards {
			if target = sh.lowest(target); target <= released {
				break // nothing more to release: the other shards need no look
			}
		}
		for seq := released + 1; seq <= target; seq++ {
			h.frames.release(seq)
		}
		released = max(released, target)
	}
}
