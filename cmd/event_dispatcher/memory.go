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
)

// reclaimMemory gives memory back to the operating system once the work
// that needed it is over, checking every second:
//
//   - after a mass departure has settled (at least reclaimDeparted
//     listeners gone, fewer than half of the peak left, the count steady
//     for a second): each listener held tens of kilobytes of goroutine
//     stacks and connection buffers;
//   - after a burst of events, at the first second without any, when the
//     heap grew large (its goal at least reclaimHeapGoal): the hub lets go
//     of every event once its listeners have it, but the frames stay
//     garbage until a collection.
//
// An idle server runs no garbage collection and Go's scavenger returns
// pages only slowly, so without this the RSS of a burst would stay for
// many minutes. Process-wide policy, hence here and not in a library.
func reclaimMemory(ctx context.Context, hub *broadcast.Hub, log zerolog.Logger) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	st := hub.Stats()
	peak, prev, accepted, busy := st.Listeners, st.Listeners, st.EventsAccepted, false
	goal := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := hub.Stats()
		n := st.Listeners
		quiet := st.EventsAccepted == accepted
		why := ""
		switch {
		case n > peak:
			peak = n
		case n == prev && peak-n >= reclaimDeparted && n < peak/2:
			why = "listeners left"
		}
		if why == "" && quiet && busy {
			metrics.Read(goal)
			if goal[0].Value.Kind() == metrics.KindUint64 && goal[0].Value.Uint64() >= reclaimHeapGoal {
				why = "burst of events over"
			}
		}
		if why != "" {
			start := time.Now()
			// Two collections: sync.Pool (listeners' write buffers, request
			// buffers) keeps its contents through the first.
			runtime.GC()
			debug.FreeOSMemory()
			log.Info().Str("why", why).Int64("listeners", n).Int64("peak", peak).Int64("took_ms", time.Since(start).Milliseconds()).
				Msg("memory returned to the system")
			peak = n
		}
		prev, accepted, busy = n, st.EventsAccepted, !quiet
	}
}
