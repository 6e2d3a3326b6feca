package main

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/pkg/broadcast"
)

// Thresholds of reclaimMemory.
const (
	reclaimDeparted = 1000    // listeners gone: a mass departure worth giving memory back for
	reclaimGrowth   = 2 << 20 // memory held above what the last return kept, worth giving back after a burst of events
	reclaimArrivals = 100     // listeners arriving in a second that make it no quiet second (a storm); fewer are ordinary churn
)

// reclaimMemory gives memory back to the operating system once the work
// that needed it is over, checking every second (see reclaimPolicy):
//
//   - after a mass departure has settled (at least reclaimDeparted
//     listeners gone, fewer than half of the peak left, the count steady
//     for a second): each listener held tens of kilobytes of goroutine
//     stacks and connection buffers;
//   - after a burst of events, at the first second without any work, when
//     the memory the process holds grew by reclaimGrowth or more since the
//     last return: the hub lets go of every event once its listeners have
//     it, but the frames stay garbage until a collection, and the pages
//     they took stay with the process after it.
//
// An idle server runs no garbage collection and Go's scavenger keeps what
// the heap goal allows (twice the live heap by default), returning the
// rest only slowly, so without this the RSS of a burst would stay for
// many minutes, however small the burst. Process-wide policy, hence here
// and not in a library.
func reclaimMemory(ctx context.Context, hub *broadcast.Hub, log zerolog.Logger) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	pol := newReclaimPolicy(hub.Stats(), heldMemory())
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := hub.Stats()
		peak := pol.peak
		why := pol.step(st, heldMemory)
		if why != "" {
			start := time.Now()
			// Two collections: sync.Pool (listeners' write buffers, request
			// buffers) keeps its contents through the first.
			runtime.GC()
			debug.FreeOSMemory()
			kept := heldMemory()
			pol.returned(kept)
			log.Info().Str("why", why).Int64("listeners", st.Listeners).Int64("peak", peak).Int64("took_ms", time.Since(start).Milliseconds()).
				Uint64("kept_bytes", kept).Msg("memory returned to the system")
		}
	}
}

// heldMemory returns the memory the Go runtime holds from the operating
// system: everything it mapped less what it has given back. Most of the
// process's RSS.
func heldMemory() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64() - s[1].Value.Uint64()
}

// reclaimPolicy decides, from the hub's figures taken once a second, when
// reclaimMemory gives memory back. A forced collection and FreeOSMemory
// stop every allocation for as long as they take (seconds with thousands
// of listeners on a busy machine), so they must run only when the service
// has nothing to do: never while POSTs come in, even if all of them are
// refused (a fan-out saturated by a storm of new listeners accepts none
// for seconds at a time), nor while events wait or listeners pour in.
//
// After a burst of events it returns memory only when there is something
// worth returning, reclaimGrowth more than the last return kept: a trickle
// of events with quiet seconds between them, which the ordinary collections
// keep within the heap goal, does not force one collection per event.
type reclaimPolicy struct {
	peak, prev        int64  // listeners: most since the last reclaim, and a second ago
	accepted, refused uint64 // EventsAccepted and EventsBusy a second ago
	busy              bool   // events were accepted in the second before
	kept              uint64 // memory held just after the last return (or at start)
}

func newReclaimPolicy(st broadcast.Stats, held uint64) *reclaimPolicy {
	return &reclaimPolicy{peak: st.Listeners, prev: st.Listeners, accepted: st.EventsAccepted, refused: st.EventsBusy, kept: held}
}

// step takes this second's figures and returns why memory is to be given
// back now, or "". held, the memory the process holds, is read only when
// it matters.
func (p *reclaimPolicy) step(st broadcast.Stats, held func() uint64) string {
	n := st.Listeners
	steady := n == p.prev
	quiet := st.EventsAccepted == p.accepted && st.EventsBusy == p.refused && st.FanoutLagEvents == 0 && n-p.prev < reclaimArrivals
	why := ""
	switch {
	case n > p.peak:
		p.peak = n
	case steady && p.peak-n >= reclaimDeparted && n < p.peak/2:
		why = "listeners left"
	}
	if why == "" && quiet && p.busy && held() >= p.kept+reclaimGrowth {
		why = "burst of events over"
	}
	if why != "" {
		p.peak = n
	}
	// A burst stays owed until a quiet second has looked at it.
	p.busy = (p.busy || st.EventsAccepted != p.accepted) && !quiet
	p.prev, p.accepted, p.refused = n, st.EventsAccepted, st.EventsBusy
	return why
}

// returned records the memory held just after memory was given back: the
// next burst is measured from there.
func (p *reclaimPolicy) returned(held uint64) { p.kept = held }
