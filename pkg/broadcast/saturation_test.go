package broadcast

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func newTestHub(t *testing.T, opts Options) *Hub {
	t.Helper()
	opts.Logger = zerolog.Nop()
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return h
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Publishes are refused once the oldest waiting event is older than MaxLag,
// or the newest would be at the pace of the rounds so far, long before the
// count limit: the backlog is bounded in time. Everything accepted is still
// delivered.
func TestAdmissionIsBoundedInTime(t *testing.T) {
	const maxLag = 50 * time.Millisecond
	h := newTestHub(t, Options{QueueSize: 1 << 20, MaxLag: maxLag, Shards: 1})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	lp := newTestLoop(h, 0)
	lp.stall()
	done := lp.start(ctx)

	accepted := 0
	for {
		err := h.Publish(fmt.Appendf(nil, `{"n":%d}`, accepted))
		if errors.Is(err, ErrBusy) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		accepted++
	}
	st := h.Stats()
	lp.release() // whatever the checks say, so that the hub can close
	if st.FanoutLagEvents <= 0 || st.FanoutLagEvents >= 1<<20 {
		t.Fatalf("refused with %d events waiting; want the time bound, not the count, to refuse", st.FanoutLagEvents)
	}
	if st.EventsBusy != 1 || st.EventsAccepted != uint64(accepted) {
		t.Fatalf("stats %+v after %d accepted and 1 refused", st, accepted)
	}

	eventually(t, 10*time.Second, "the loop got every accepted event", func() bool { return lp.got() == int64(accepted) })
	if err := h.Publish([]byte(`{}`)); err != nil {
		t.Fatalf("publish once caught up: %v", err)
	}
	cancel()
	<-done
	if len(lp.lost) > 0 {
		t.Fatalf("lost %v", lp.lost)
	}
}

// A hub that is saturated and behind, but moving, is healthy; events are
// refused meanwhile, none accepted is lost.
func TestHealthyWhileSaturatedButMoving(t *testing.T) {
	// StallAfter far above a round (2 ms), so that a loaded machine pausing
	// this process does not look like a stall.
	h := newTestHub(t, Options{MaxLag: 20 * time.Millisecond, StallAfter: 2 * time.Second, Shards: 2})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	slow := newTestLoop(h, 0)
	slow.delay = 2 * time.Millisecond // at most 7500 events/s, far below what one publisher sends
	done := slow.start(ctx)
	var received atomic.Int64
	served := make(chan error, 1)
	go func() {
		_, err := h.Serve(&countingSink{header: http.Header{}, data: &received}, (&http.Request{}).WithContext(ctx))
		served <- err
	}()
	eventually(t, 5*time.Second, "the listener is registered", func() bool { return live(h.pump.shards[1]) == 1 })

	var accepted, refused int64
	unhealthy := 0
	stop := time.Now().Add(2 * time.Second)
	for i := 0; time.Now().Before(stop); i++ {
		switch err := h.Publish(fmt.Appendf(nil, `{"n":%d}`, i)); {
		case err == nil:
			accepted++
		case errors.Is(err, ErrBusy):
			refused++
			time.Sleep(100 * time.Microsecond)
		default:
			t.Fatal(err)
		}
		if i%64 == 0 && !h.Healthy() {
			unhealthy++
		}
	}
	if refused == 0 {
		t.Fatalf("the hub was never saturated (%d accepted): the test proves nothing", accepted)
	}
	if unhealthy > 0 {
		t.Fatalf("Healthy() was false %d times while the fan-out was behind but moving", unhealthy)
	}
	eventually(t, 10*time.Second, "every accepted event delivered", func() bool {
		return slow.got() == accepted && received.Load() == accepted
	})
	cancel()
	<-done
	<-served
	t.Logf("%d accepted, %d refused, all delivered", accepted, refused)
}

// Healthy turns false only when the fan-out has not moved at all for
// StallAfter while work is pending, and true again once it moves.
func TestUnhealthyWhenNothingMoves(t *testing.T) {
	h := newTestHub(t, Options{StallAfter: 200 * time.Millisecond, MaxLag: time.Minute, Shards: 1})
	h.pump.gateWait = time.Millisecond // the stalled loop makes every batch wait this long
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	lp := newTestLoop(h, 0)
	lp.stall()
	done := lp.start(ctx)
	if !h.Healthy() {
		t.Fatal("unhealthy before anything was published")
	}
	time.Sleep(300 * time.Millisecond) // idle longer than StallAfter: still healthy
	if !h.Healthy() {
		t.Fatal("an idle hub is not healthy")
	}
	accepted := 0
	for ; h.Publish([]byte(`{}`)) == nil; accepted++ {
	}
	eventually(t, 10*time.Second, "Healthy() false while the fan-out is wedged", func() bool { return !h.Healthy() })
	lp.release()
	eventually(t, 10*time.Second, "Healthy() true once it moves again", h.Healthy)
	eventually(t, 10*time.Second, "every accepted event delivered", func() bool { return lp.got() == int64(accepted) })
	cancel()
	<-done
}

// Close hands out the whole backlog and lets every listener write it
// before ending the streams.
func TestCloseDeliversTheBacklogBeforeEndingStreams(t *testing.T) {
	h, err := New(Options{MaxLag: time.Minute, Shards: 1, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	lp := newTestLoop(h, 0)
	lp.stall() // the gate waits for it: the backlog builds up
	done := lp.start(ctx)
	var received atomic.Int64
	served := make(chan error, 1)
	go func() {
		_, err := h.Serve(&countingSink{header: http.Header{}, data: &received}, (&http.Request{}).WithContext(ctx))
		served <- err
	}()
	eventually(t, 5*time.Second, "the listener is registered", func() bool { return live(h.pump.shards[0]) == 2 })
	const events = 600
	for i := range events {
		if err := h.Publish(fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	if lag := h.Stats().FanoutLagEvents; lag == 0 {
		t.Fatal("no backlog before Close")
	}
	closed := make(chan error, 1)
	go func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer ccancel()
		closed <- h.Close(cctx)
	}()
	time.Sleep(50 * time.Millisecond)
	lp.release()
	if err := <-served; !errors.Is(err, ErrShutdown) {
		t.Fatalf("stream ended with %v, want shutdown", err)
	}
	if got := received.Load(); got != events {
		t.Fatalf("listener got %d of %d events before its stream ended", got, events)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	cancel()
	<-done
}

// When each round is slow, admission also looks ahead: once the fan-out's
// pace is known, no more events are let in than it hands out within
// MaxLag. The loop takes at least 10 ms over each batch of at most 15, so
// about MaxLag / (10 ms / 15) events may wait; judged by the age of the
// oldest alone, a fifth of a second's worth of fast POSTs would.
func TestAdmissionLooksAheadWhenRoundsAreSlow(t *testing.T) {
	const maxLag, delay = 200 * time.Millisecond, 10 * time.Millisecond
	h := newTestHub(t, Options{QueueSize: 1 << 20, MaxLag: maxLag, Shards: 1})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	slow := newTestLoop(h, 0)
	slow.delay = delay
	done := slow.start(ctx)

	bound := int64(maxLag/(delay/batchSize)) + 1
	var accepted, refused, judged, most int64
	// The burst let in before the first slow round takes a while to clear:
	// go on until enough events were judged with the pace known.
	stop := time.Now().Add(30 * time.Second)
	for i := 0; judged < 1000 && time.Now().Before(stop); i++ {
		// Until the hub has seen a slow round, it cannot know.
		known := h.pump.perBatch.Load() >= int64(delay)
		switch err := h.Publish(fmt.Appendf(nil, `{"n":%d}`, i)); {
		case err == nil:
			accepted++
			if known {
				judged++
				most = max(most, h.Stats().FanoutLagEvents)
			}
		case errors.Is(err, ErrBusy):
			refused++
			time.Sleep(100 * time.Microsecond)
		default:
			t.Fatal(err)
		}
	}
	if refused == 0 || judged == 0 {
		t.Fatalf("%d refused, %d accepted once the pace was known: the test proves nothing", refused, judged)
	}
	if most > bound {
		t.Fatalf("%d events waited at once; at the loop's best pace only %d can be handed out within %s", most, bound, maxLag)
	}
	eventually(t, 20*time.Second, "every accepted event delivered", func() bool { return slow.got() == accepted })
	cancel()
	<-done
	t.Logf("%d accepted (%d with the pace known), %d refused, at most %d waiting then (bound %d)", accepted, judged, refused, most, bound)
}
