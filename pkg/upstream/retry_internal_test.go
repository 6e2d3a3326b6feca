package upstream

import (
	"net/http"
	"testing"
	"time"
)

func TestRetryAfterReadsSecondsAndDates(t *testing.T) {
	now := time.Date(2026, 12, 6, 18, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":     0,
		"0":    0,
		"7":    7 * time.Second,
		"-1":   0,
		"soon": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Minute).Format(http.TimeFormat):     0, // already past
	} {
		if got := retryAfter(v, now); got != want {
			t.Errorf("Retry-After %q = %s, want %s", v, got, want)
		}
	}
}

func TestBackoffDoublesWithJitterUpToTheCap(t *testing.T) {
	o := Options{Backoff: 100 * time.Millisecond, MaxBackoff: 800 * time.Millisecond}
	o.fill()
	f := &feed{opts: &o}
	for failures, full := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 9: 800 * time.Millisecond, 100: 800 * time.Millisecond} {
		for range 50 {
			if d := f.backoff(failures); d < full/2 || d > full {
				t.Fatalf("backoff after %d failures = %s, want between %s and %s", failures, d, full/2, full)
			}
		}
	}
	// 4xx: slow; a productive connection: the retry: hint, floored.
	failures := 0
	if d := f.wait(outcome{status: http.StatusForbidden, refused: true}, &failures); d < o.ClientErrorDelay {
		t.Errorf("after a 403: %s, want at least %s", d, o.ClientErrorDelay)
	}
	f.retry = 0
	if d := f.wait(outcome{status: http.StatusOK, blocks: 3}, &failures); d != o.MinRetry || failures != 0 {
		t.Errorf("after a stream with events and retry: 0: %s (failures %d), want the %s floor", d, failures, o.MinRetry)
	}
	if d := f.wait(outcome{status: http.StatusServiceUnavailable, retryAfter: time.Hour}, &failures); d != o.MaxRetryAfter {
		t.Errorf("Retry-After of an hour: %s, want the %s cap", d, o.MaxRetryAfter)
	}
	// retry: is the upstream's hint as much as Retry-After: one of an hour
	// (or 31 years) must not keep the relay away longer than that cap.
	f.retry = time.Hour
	if d := f.wait(outcome{status: http.StatusOK, blocks: 3}, &failures); d != o.MaxRetryAfter {
		t.Errorf("after a stream with events and retry: of an hour: %s, want the %s cap", d, o.MaxRetryAfter)
	}
	if d := f.wait(outcome{err: http.ErrHandlerTimeout}, &failures); d != o.MaxRetryAfter {
		t.Errorf("after a failure with retry: of an hour: %s, want the %s cap", d, o.MaxRetryAfter)
	}
}
