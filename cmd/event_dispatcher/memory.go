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
	reclaimDeparted = 1000     // listeners gone: a mass departure worth giving memory back for
	reclaimHeapGoal = 64 << 20 // heap goal after a burst of events worth giving memory back for
	reclaimArrivals = 100      // listeners arriving in a second that make it no quiet second (a storm); fewer are ordinary churn
)

// reclaimMemory gives memory back to the operating system once the work
// that needed it is over, checking every second (see reclaimPolicy):
//
//   - after a mass departure has settled (at least reclaimDeparted
//     listeners gone, fewer than half of the peak left, the count steady
//     for a second): each listener held tens of kilobytes of goroutine
//     stacks and connection buffers;
//   - after a burst of events, at the first second without any work, when
//     the heap grew large (its goal at least reclaimHeapGoal): the hub lets
//     go of every event once its listeners have it, but the frames stay
//     garbage until a collection.
//
// An idle server runs no garbage collection and Go's scavenger returns
// pages only slowly, so without this the RSS of a burst would stay for
// many minutes. Process-wide policy, hence here and not in a library.
func reclaimMemory(ctx context.Context, hub *broadcast.Hub, log zerolog.Logger) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	pol := newReclaimPolicy(hub.Stats())
	goal := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	heapGoal := func() uint64 {
		metrics.Read(goal)
		if goal[0].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return goal[0].Value.Uint64()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := hub.Stats()
		peak := pol.peak
		why := pol.step(st, heapGoal)
		if why != "" {
			start := time.Now()
			// Two collections: sync.Pool (listeners' write buffers, request
			// buffers) keeps its contents through the first.
			runtime.GC()
			debug.FreeOSMemory()
			log.Info().Str("why", why).Int64("listeners", st.Listeners).Int64("peak", peak).Int64("took_ms", time.Since(start).Milliseconds()).
				Msg("memory returned to the system")
		}
	}
}

// reclaimPolicy decides, from the hub's figures taken once a second, when
// reclaimMemory gives memory back. A forced collection and FreeOSMemory
// stop every allocation for as long as they take (seconds with thousands
// of listeners on a busy machine), so they must run only when the service
// has nothing to do: never while POSTs come in, even if all of them are
// refused (a fan-out saturated by a storm of new listeners accepts none
// for seconds at a time), nor while events wait or listeners pour in.
type reclaimPolicy struct {
	peak, prev        int64  // listeners: most since the last reclaim, and a second ago
	accepted, refused uint64 // EventsAccepted and EventsBusy a second ago
	busy              bool   // events were accepted in the second before
}

func newReclaimPolicy(st broadcast.Stats) *reclaimPolicy {
	return &reclaimPolicy{peak: st.Listeners, prev: st.Listeners, accepted: st.EventsAccepted, refused: st.EventsBusy}
}

// step takes this second's figures and returns why memory is to be given
// back now, or "". heapGoal is read only when it matters.
func (p *reclaimPolicy) step(st broadcast.Stats, heapGoal func() uint64) string {
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
	if why == "" && quiet && p.busy && heapGoal() >= reclaimHeapGoal {
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
