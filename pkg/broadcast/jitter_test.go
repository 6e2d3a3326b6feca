package broadcast

import (
	"testing"
	"time"
)

// Streams cut by MAX_STREAM_DURATION must not all end at the same moment.
func TestJitterStaysWithin15PercentAndSpreads(t *testing.T) {
	const d = 100 * time.Second
	seen := map[time.Duration]bool{}
	lo, hi := d, d
	for range 2000 {
		j := jitter(d)
		if j < d*85/100 || j > d*115/100 {
			t.Fatalf("jitter(%s) = %s, outside ±15%%", d, j)
		}
		seen[j] = true
		lo, hi = min(lo, j), max(hi, j)
	}
	if len(seen) < 1000 || hi-lo < d/5 {
		t.Fatalf("jitter barely spreads: %d distinct values over [%s, %s]", len(seen), lo, hi)
	}
	if got := jitter(0); got != 0 {
		t.Fatalf("jitter(0) = %s", got)
	}
}
