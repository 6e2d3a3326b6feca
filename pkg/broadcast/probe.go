package broadcast

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// probe is an internal subscriber of the r3labs stream that only counts
// events. r3labs flushes once per event it hands a subscriber, so the count
// tells how far the fan-out has got; a watchdog compares it with what was
// sent, which is how /health knows the hub really delivers.
type probe struct {
	header  http.Header
	started bool // first Flush comes from r3labs' WriteHeader, not an event
	ready   chan struct{}
	seen    atomic.Uint64
	wedged  atomic.Bool
}

func (p *probe) Header() http.Header         { return p.header }
func (p *probe) Write(b []byte) (int, error) { return len(b), nil }
func (p *probe) WriteHeader(int)             {}

// Flush is called only by the probe's r3labs loop, one goroutine.
func (p *probe) Flush() {
	if !p.started {
		p.started = true
		close(p.ready)
		return
	}
	p.seen.Add(1)
}

// startProbe subscribes a probe (returning once it is registered, so it
// sees everything sent afterwards) and starts its watchdog: every period it
// marks the hub wedged if what had been sent one period earlier has still
// not reached the probe.
func startProbe(ctx context.Context, h *Hub, sent *atomic.Uint64, period time.Duration, wg *sync.WaitGroup) *probe {
	p := &probe{header: http.Header{}, ready: make(chan struct{})}
	wg.Add(2)
	go func() {
		defer wg.Done()
		h.subscribe(ctx, p)
	}()
	<-p.ready
	go func() {
		defer wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		target := sent.Load()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				p.wedged.Store(p.seen.Load() < target)
				target = sent.Load()
			}
		}
	}()
	return p
}

// waitCaughtUp waits until the probe has seen target events or ctx ends.
func (p *probe) waitCaughtUp(ctx context.Context, target uint64) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for p.seen.Load() < target {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
