package main

import (
	"testing"

	"event-dispatcher/pkg/broadcast"
)

// The reclaim policy runs a forced collection and FreeOSMemory, which stop
// every allocation while they run, only when the service has nothing to do.
func TestReclaimPolicy(t *testing.T) {
	const big, small = reclaimHeapGoal, reclaimHeapGoal - 1
	type second struct {
		st   broadcast.Stats
		goal uint64
		want string
	}
	st := func(listeners int64, accepted, refused uint64, lag int64) broadcast.Stats {
		return broadcast.Stats{Listeners: listeners, EventsAccepted: accepted, EventsBusy: refused, FanoutLagEvents: lag}
	}
	for _, tc := range []struct {
		name    string
		seconds []second
	}{
		{"burst then quiet", []second{
			{st(2, 100, 0, 0), big, ""},
			{st(2, 100, 0, 0), big, "burst of events over"},
			{st(2, 100, 0, 0), big, ""}, // once
		}},
		{"small heap", []second{
			{st(2, 100, 0, 0), small, ""},
			{st(2, 100, 0, 0), small, ""},
			{st(2, 100, 0, 0), big, ""}, // the quiet second looked at it
		}},
		{"storm: every POST refused for a second", []second{
			{st(3000, 100, 0, 0), big, ""},
			{st(3000, 100, 500, 0), big, ""},
			{st(3000, 100, 900, 0), big, ""},
			{st(3000, 100, 900, 0), big, "burst of events over"}, // quiet at last
		}},
		{"events still waiting", []second{
			{st(2, 100, 0, 0), big, ""},
			{st(2, 100, 0, 40), big, ""},
			{st(2, 100, 0, 0), big, "burst of events over"},
		}},
		{"listeners arriving", []second{
			{st(2, 100, 0, 0), big, ""},
			{st(3000, 100, 0, 0), big, ""},
			{st(6000, 100, 0, 0), big, ""},
			{st(6000, 100, 0, 0), big, "burst of events over"},
		}},
		{"ordinary churn", []second{
			{st(500, 100, 0, 0), big, ""},
			{st(520, 100, 0, 0), big, "burst of events over"},
		}},
		{"mass departure settles", []second{
			{st(5000, 0, 0, 0), small, ""},
			{st(10, 0, 0, 0), small, ""},
			{st(10, 0, 0, 0), small, "listeners left"},
			{st(10, 0, 0, 0), small, ""},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newReclaimPolicy(broadcast.Stats{})
			for i, s := range tc.seconds {
				if got := p.step(s.st, func() uint64 { return s.goal }); got != s.want {
					t.Fatalf("second %d (%+v): reclaim %q, want %q", i, s.st, got, s.want)
				}
			}
		})
	}
}
