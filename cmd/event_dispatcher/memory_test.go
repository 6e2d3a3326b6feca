package main

import (
	"testing"

	"event-dispatcher/pkg/broadcast"
)

// The reclaim policy runs a forced collection and FreeOSMemory, which stop
// every allocation while they run, never while the hub is busy (POSTs
// refused, events waiting, listeners pouring in), after a burst of events
// only when the memory held grew enough since the last return, and while
// light traffic goes on only once the runtime stopped collecting, at most
// every reclaimSpacing seconds.
func TestReclaimPolicy(t *testing.T) {
	const mib = 1 << 20
	const big, small = reclaimGrowth, reclaimGrowth - 1
	type second struct {
		st   broadcast.Stats
		held uint64 // memory held this second
		want string
		kept uint64 // memory held after the return, when there is one
		gcs  uint64 // collections the runtime completed so far
	}
	st := func(listeners int64, accepted, refused uint64, lag int64) broadcast.Stats {
		return broadcast.Stats{Listeners: listeners, EventsAccepted: accepted, EventsBusy: refused, FanoutLagEvents: lag}
	}
	const trickle = "burst of events over, light traffic goes on"
	// light returns n seconds of a trickle (2 events a second) from event
	// accepted on, the runtime collecting every gcEvery seconds (0: never),
	// with held bytes held, and the given outcome on the last second.
	light := func(n int, accepted uint64, held uint64, gcs, gcEvery uint64, last string) []second {
		var ss []second
		for i := range n {
			if gcEvery > 0 && uint64(i)%gcEvery == 0 {
				gcs++
			}
			s := second{st: st(2, accepted+2*uint64(i), 0, 0), held: held, gcs: gcs}
			if i == n-1 {
				s.want = last
			}
			ss = append(ss, s)
		}
		return ss
	}
	refusing := func(n int, accepted, gcs uint64) []second {
		var ss []second
		for i := range n {
			ss = append(ss, second{st: st(2, accepted+2*uint64(i), uint64(10*(i+1)), 0), held: big, gcs: gcs})
		}
		return ss
	}
	dropped := func(n int, accepted, gcs uint64, last string) []second {
		var ss []second
		for i := range n {
			s := second{st: broadcast.Stats{Listeners: 1, EventsAccepted: accepted + 2*uint64(i), ListenersDropped: 2}, held: small, gcs: gcs}
			if i == n-1 {
				s.want = last
			}
			ss = append(ss, s)
		}
		return ss
	}
	cat := func(parts ...[]second) []second {
		var ss []second
		for _, p := range parts {
			ss = append(ss, p...)
		}
		return ss
	}
	for _, tc := range []struct {
		name    string
		seconds []second
	}{
		{"burst then quiet", []second{
			{st(2, 100, 0, 0), big, "", 0, 0},
			{st(2, 100, 0, 0), big, "burst of events over", 0, 0},
			{st(2, 100, 0, 0), big, "", 0, 0}, // once
		}},
		{"little memory gained", []second{
			{st(2, 100, 0, 0), small, "", 0, 0},
			{st(2, 100, 0, 0), small, "", 0, 0},
			{st(2, 100, 0, 0), big, "", 0, 0}, // the quiet second looked at it
		}},
		{"small bursts: each counted from what the last return kept", []second{
			{st(2, 100, 0, 0), 30 * mib, "", 0, 0},
			{st(2, 100, 0, 0), 30 * mib, "burst of events over", 20 * mib, 0},
			{st(2, 200, 0, 0), 20*mib + small, "", 0, 0},
			{st(2, 200, 0, 0), 20*mib + small, "", 0, 0}, // less than reclaimGrowth more than kept: not worth it
			{st(2, 300, 0, 0), 20*mib + big, "", 0, 0},
			{st(2, 300, 0, 0), 20*mib + big, "burst of events over", 20 * mib, 0},
		}},
		{"storm: every POST refused for a second", []second{
			{st(3000, 100, 0, 0), big, "", 0, 0},
			{st(3000, 100, 500, 0), big, "", 0, 0},
			{st(3000, 100, 900, 0), big, "", 0, 0},
			{st(3000, 100, 900, 0), big, "burst of events over", 0, 0}, // quiet at last
		}},
		{"events still waiting", []second{
			{st(2, 100, 0, 0), big, "", 0, 0},
			{st(2, 100, 0, 40), big, "", 0, 0},
			{st(2, 100, 0, 0), big, "burst of events over", 0, 0},
		}},
		{"listeners arriving", []second{
			{st(2, 100, 0, 0), big, "", 0, 0},
			{st(3000, 100, 0, 0), big, "", 0, 0},
			{st(6000, 100, 0, 0), big, "", 0, 0},
			{st(6000, 100, 0, 0), big, "burst of events over", 0, 0},
		}},
		{"ordinary churn", []second{
			{st(500, 100, 0, 0), big, "", 0, 0},
			{st(520, 100, 0, 0), big, "burst of events over", 0, 0},
		}},
		{"mass departure settles", []second{
			{st(5000, 0, 0, 0), small, "", 0, 0},
			{st(10, 0, 0, 0), small, "", 0, 0},
			{st(10, 0, 0, 0), small, "listeners left", 0, 0},
			{st(10, 0, 0, 0), small, "", 0, 0},
		}},
		{"burst, then a trickle: once the runtime stops collecting", cat(
			[]second{{st(2, 1000, 0, 0), 60 * mib, "", 0, 5}, {st(2, 3000, 0, 0), 60 * mib, "", 0, 9}},
			light(reclaimStale, 3002, 60*mib, 9, 0, trickle))},
		{"light steady traffic: at most every reclaimSpacing seconds", cat(
			light(reclaimStale, 100, big, 0, 0, trickle),
			light(reclaimSpacing-1, 200, big, 2, 0, ""),
			light(1, 300, big, 2, 0, trickle))},
		{"heavy traffic: the runtime keeps collecting", light(30, 100, 60*mib, 0, 1, "")},
		{"traffic collected every other second: its heap stays near its goal", light(30, 100, 60*mib, 0, 2, "")},
		{"trickle: a collection by the runtime starts the wait again", cat(
			light(reclaimStale-1, 100, big, 0, 0, ""),
			light(reclaimStale+1, 200, big, 1, reclaimStale+1, trickle))},
		{"trickle with POSTs refused: never", cat(
			light(reclaimStale, 100, big, 0, 0, trickle),
			refusing(reclaimSpacing+2, 200, 2),
			[]second{{st(2, 300, 10*(reclaimSpacing+2), 0), big, trickle, 0, 2}})},
		{"trickle with events waiting or listeners pouring in: never", []second{
			{st(2, 100, 0, 10), big, "", 0, 0},
			{st(2, 102, 0, 10), big, "", 0, 0},
			{st(2, 104, 0, 10), big, "", 0, 0},
			{st(3000, 106, 0, 0), big, "", 0, 0},
			{st(6000, 108, 0, 0), big, "", 0, 0},
			{st(6000, 110, 0, 0), big, trickle, 0, 0},
		}},
		{"trickle, little memory gained", light(30, 100, small, 0, 0, "")},
		{"slow listeners dropped after the return: once more, spaced, and only when calm", cat(
			light(reclaimStale, 100, big, 0, 0, trickle),
			[]second{
				{broadcast.Stats{Listeners: 1, EventsAccepted: 200, ListenersDropped: 2}, small, "", 0, 2},
				{broadcast.Stats{Listeners: 1, EventsAccepted: 202, ListenersDropped: 2, FanoutLagEvents: 5}, small, "", 0, 2},
			},
			dropped(reclaimSpacing-3, 204, 2, ""),
			dropped(1, 300, 2, "slow listeners dropped"),
			dropped(reclaimSpacing+2, 400, 2, ""))}, // once
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newReclaimPolicy(broadcast.Stats{}, memState{})
			for i, s := range tc.seconds {
				got := p.step(s.st, memState{held: s.held, gcs: s.gcs})
				if got != s.want {
					t.Fatalf("second %d (%+v, %d bytes held, %d collections): reclaim %q, want %q", i, s.st, s.held, s.gcs, got, s.want)
				}
				if got != "" {
					p.returned(memState{held: s.kept, gcs: s.gcs + 2}) // its own collections
				}
			}
		})
	}
}
