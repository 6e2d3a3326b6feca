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
	reclaimArrivals = 100     // listeners arriving in a second that make it no calm second (a storm); fewer are ordinary churn
	reclaimStale    = 2       // seconds without a collection by the runtime under light traffic: the heap goal is the burst's, not the traffic's
	reclaimSpacing  = 10      // seconds at least between two returns while events keep coming
)

// reclaimMemory gives memory back to the operating system once the work
// that needed it is over, checking every second (see reclaimPolicy):
//
//   - after a mass departure has settled (at least reclaimDeparted
//     listeners gone, fewer than half of the peak left, the count steady
//     for a second): each listener held tens of kilobytes of goroutine
//     stacks and connection buffers;
//   - after a burst of events, once the hub is calm again (no POST
//     refused, no event waiting, no storm of new listeners) and the memory
//     the process holds grew by reclaimGrowth or more since the last
//     return: at once when no POST came in at all that second, or, while
//     light traffic goes on, once the runtime has run no collection for
//     reclaimStale seconds, at most every reclaimSpacing seconds;
//   - after slow listeners were dropped, on the same conditions: what only
//     their queues held is garbage now, without the memory held growing.
//
// Why: the hub lets go of every event once its listeners have it, but the
// frames stay garbage until a collection, and Go's scavenger returns only
// what exceeds the heap goal of the last collection (about twice the live
// heap then, GOGC=100). The last collection of a burst sets that goal from
// the burst's live heap, and light traffic after it allocates too little to
// reach it, so no collection comes for minutes (the runtime forces one
// every two) and the burst's RSS stays. A collection now finds the little
// that is live, which makes it cheap. Process-wide policy, hence here and
// not in a library.
func reclaimMemory(ctx context.Context, hub *broadcast.Hub, log zerolog.Logger) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	pol := newReclaimPolicy(hub.Stats(), readMemState())
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := hub.Stats()
		peak := pol.peak
		why := pol.step(st, readMemState())
		if why != "" {
			start := time.Now()
			// FreeOSMemory collects, then returns every free page at once
			// (the scavenger would take seconds); its collection also empties
			// sync.Pool's victim cache (listeners' write buffers, request
			// buffers), which the first collection moved there.
			runtime.GC()
			debug.FreeOSMemory()
			after := readMemState()
			pol.returned(after)
			log.Info().Str("why", why).Int64("listeners", st.Listeners).Int64("peak", peak).Int64("took_ms", time.Since(start).Milliseconds()).
				Uint64("kept_bytes", after.held).Msg("memory returned to the system")
		}
	}
}

// memState is what reclaimPolicy reads of the Go runtime each second.
type memState struct {
	held uint64 // memory held from the operating system: everything mapped less what was given back (most of the RSS)
	gcs  uint64 // garbage collections completed since the start
}

func readMemState() memState {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	var m memState
	if s[0].Value.Kind() == metrics.KindUint64 && s[1].Value.Kind() == metrics.KindUint64 {
		m.held = s[0].Value.Uint64() - s[1].Value.Uint64()
	}
	if s[2].Value.Kind() == metrics.KindUint64 {
		m.gcs = s[2].Value.Uint64()
	}
	return m
}

// reclaimPolicy decides, from the hub's figures and the runtime's taken
// once a second, when reclaimMemory gives memory back. A forced collection
// and FreeOSMemory stop every allocation for as long as they take (seconds
// with thousands of listeners on a busy machine), so they must never run
// while the hub is busy: while POSTs are refused (a fan-out saturated by a
// storm of new listeners refuses them for seconds at a time), events wait
// for fan-out or listeners pour in.
//
// Accepted POSTs alone do not make the hub busy (a live instance always
// has some): while they go on, the burst is over when the runtime itself
// stops collecting, that is when the traffic allocates too little to reach
// the heap goal the burst left, so the heap is far larger than the traffic
// needs. Traffic heavy enough to keep the runtime collecting every second
// or so keeps its heap near its goal without help, and is left alone.
//
// It returns memory only when there is something worth returning,
// reclaimGrowth more than the last return kept, and while events keep
// coming at most every reclaimSpacing seconds: light steady traffic, whose
// heap regrows towards its goal, costs one cheap collection that often at
// most.
type reclaimPolicy struct {
	peak, prev        int64  // listeners: most since the last reclaim, and a second ago
	accepted, refused uint64 // EventsAccepted and EventsBusy a second ago
	dropped           uint64 // ListenersDropped a second ago
	busy              bool   // events were accepted since a calm second last looked at the memory
	freed             bool   // a listener was dropped since the last return: its queue is garbage
	kept              uint64 // memory held just after the last return (or at start)
	gcs               uint64 // collections counted a second ago
	stale             int    // seconds in a row without a collection
	since             int    // seconds since the last return
}

func newReclaimPolicy(st broadcast.Stats, m memState) *reclaimPolicy {
	return &reclaimPolicy{peak: st.Listeners, prev: st.Listeners, accepted: st.EventsAccepted, refused: st.EventsBusy,
		dropped: st.ListenersDropped, kept: m.held, gcs: m.gcs, since: reclaimSpacing}
}

// step takes this second's figures and returns why memory is to be given
// back now, or "".
func (p *reclaimPolicy) step(st broadcast.Stats, m memState) string {
	n := st.Listeners
	steady := n == p.prev
	arrived := st.EventsAccepted != p.accepted
	calm := st.EventsBusy == p.refused && st.FanoutLagEvents == 0 && n-p.prev < reclaimArrivals
	if m.gcs == p.gcs {
		p.stale++
	} else {
		p.stale = 0
	}
	p.since++
	// Quiet: nothing came in. Settled: light traffic, the heap goal stale.
	quiet := calm && !arrived
	settled := quiet || calm && p.stale >= reclaimStale && p.since >= reclaimSpacing
	why := ""
	switch {
	case n > p.peak:
		p.peak = n
	case steady && p.peak-n >= reclaimDeparted && n < p.peak/2:
		why = "listeners left"
	}
	if why == "" && settled && (p.busy || arrived) && m.held >= p.kept+reclaimGrowth {
		why = "burst of events over"
		if arrived {
			why = "burst of events over, light traffic goes on"
		}
	}
	// A slow listener dropped leaves its queue, up to SUBSCRIBER_BUFFER_BYTES
	// of events only it held, as garbage: the memory held does not grow but
	// what is live shrinks, often just after a return.
	p.freed = p.freed || st.ListenersDropped != p.dropped
	if why == "" && p.freed && calm && p.stale >= reclaimStale && p.since >= reclaimSpacing {
		why = "slow listeners dropped"
	}
	if why != "" {
		p.peak = n
	}
	// A burst stays owed until a settled second has looked at it.
	p.busy = (p.busy || arrived) && !settled
	p.prev, p.accepted, p.refused, p.dropped, p.gcs = n, st.EventsAccepted, st.EventsBusy, st.ListenersDropped, m.gcs
	return why
}

// returned records the runtime's figures just after memory was given back:
// the next burst is measured from there, and the collections reclaimMemory
// forced do not count as the runtime's.
func (p *reclaimPolicy) returned(m memState) {
	p.kept, p.gcs, p.since, p.freed = m.held, m.gcs, 0, false
}
