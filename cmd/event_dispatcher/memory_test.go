package main

import (
	"testing"

	"event-dispatcher/pkg/broadcast"
)

// The reclaim policy runs a forced collection and FreeOSMemory, which stop
// every allocation while they run, only when the service has nothing to do,
// and after a burst of events only when the memory held grew enough since
// the last return.
func TestReclaimPolicy(t *testing.T) {
	const mib = 1 << 20
	const big, small = reclaimGrowth, reclaimGrowth - 1
	type second struct {
		st   broadcast.Stats
		held uint64 // memory held this second
		want string
		kept uint64 // memory held after the return, when there is one
	}
	st := func(listeners int64, accepted, refused uint64, lag int64) broadcast.Stats {
		return broadcast.Stats{Listeners: listeners, EventsAccepted: accepted, EventsBusy: refused, FanoutLagEvents: lag}
	}
	for _, tc := range []struct {
		name    string
		seconds []second
	}{
		{"burst then quiet", []second{
			{st(2, 100, 0, 0), big, "", 0},
			{st(2, 100, 0, 0), big, "burst of events over", 0},
			{st(2, 100, 0, 0), big, "", 0}, // once
		}},
		{"little memory gained", []second{
			{st(2, 100, 0, 0), small, "", 0},
			{st(2, 100, 0, 0), small, "", 0},
			{st(2, 100, 0, 0), big, "", 0}, // the quiet second looked at it
		}},
		{"small bursts: each counted from what the last return kept", []second{
			{st(2, 100, 0, 0), 30 * mib, "", 0},
			{st(2, 100, 0, 0), 30 * mib, "burst of events over", 20 * mib},
			{st(2, 200, 0, 0), 20*mib + small, "", 0},
			{st(2, 200, 0, 0), 20*mib + small, "", 0}, // less than reclaimGrowth more than kept: not worth it
			{st(2, 300, 0, 0), 20*mib + big, "", 0},
			{st(2, 300, 0, 0), 20*mib + big, "burst of events over", 20 * mib},
		}},
		{"storm: every POST refused for a second", []second{
			{st(3000, 100, 0, 0), big, "", 0},
			{st(3000, 100, 500, 0), big, "", 0},
			{st(3000, 100, 900, 0), big, "", 0},
			{st(3000, 100, 900, 0), big, "burst of events over", 0}, // quiet at last
		}},
		{"events still waiting", []second{
			{st(2, 100, 0, 0), big, "", 0},
			{st(2, 100, 0, 40), big, "", 0},
			{st(2, 100, 0, 0), big, "burst of events over", 0},
		}},
		{"listeners arriving", []second{
			{st(2, 100, 0, 0), big, "", 0},
			{st(3000, 100, 0, 0), big, "", 0},
			{st(6000, 100, 0, 0), big, "", 0},
			{st(6000, 100, 0, 0), big, "burst of events over", 0},
		}},
		{"ordinary churn", []second{
			{st(500, 100, 0, 0), big, "", 0},
			{st(520, 100, 0, 0), big, "burst of events over", 0},
		}},
		{"mass departure settles", []second{
			{st(5000, 0, 0, 0), small, "", 0},
			{st(10, 0, 0, 0), small, "", 0},
			{st(10, 0, 0, 0), small, "listeners left", 0},
			{st(10, 0, 0, 0), small, "", 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newReclaimPolicy(broadcast.Stats{}, 0)
			for i, s := range tc.seconds {
				got := p.step(s.st, func() uint64 { return s.held })
				if got != s.want {
					t.Fatalf("second %d (%+v, %d bytes held): reclaim %q, want %q", i, s.st, s.held, got, s.want)
				}
				if got != "" {
					p.returned(s.kept)
				}
			}
		})
	}
}
