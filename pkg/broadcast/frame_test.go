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

// The ring must hold every frame a subscriber loop may still look up. This
// drives the real r3labs to the worst case: one loop stops while events
// keep coming until the hub refuses them, so its own 64-slot channel, its
// shard's goroutine and the pump are all full of full batches, and the
// queue behind them too. When the loop goes on, every number it was handed
// must still resolve, and the listener beside it loses nothing.
func TestRingOutlivesAStalledLoop(t *testing.T) {
	const queue = 35 // needs 35 + 66 × 15 = 1025 slots: a ring one short would be 1024
	h, err := New(Options{QueueSize: queue, MaxLag: time.Hour, Shards: 1, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	h.pump.gateWait = 2 * time.Millisecond // the stalled loop makes every batch wait this long
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var received atomic.Int64
	sink := &countingSink{header: http.Header{}, data: &received}
	served := make(chan error, 1)
	go func() { _, err := h.Serve(sink, (&http.Request{}).WithContext(ctx)); served <- err }()

	stall := newTestLoop(h, 0)
	stall.stall()
	loopDone := stall.start(ctx)
	for live(h.pump.shards[0]) < 2 {
		time.Sleep(time.Millisecond) // the listener registered with r3labs too
	}

	// Shut the gate as if a batch were in flight, so the first batch the
	// stalled loop gets is full too.
	sh := h.pump.shards[0]
	sh.depth = 1 // each batch waits for the one before: all are full
	sh.batches[0].need.Store(1)
	sh.batches[0].openedAt = time.Now()
	// Publish until the hub refuses while the pump has been stuck in one
	// hand-over for a while: everything is full.
	accepted := 0
	for {
		err := h.Publish(fmt.Appendf(nil, `{"n":%d}`, accepted))
		switch {
		case err == nil:
			accepted++
			continue
		case !errors.Is(err, ErrBusy):
			t.Fatal(err)
		}
		if start := h.pump.handStart.Load(); start != 0 && time.Since(time.Unix(0, start)) > 100*time.Millisecond {
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	<-stall.stalled
	newest := h.seq.Load()
	stall.release()
	if err := h.pump.waitHanded(t.Context(), newest); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-loopDone
	if err := <-served; !errors.Is(err, context.Canceled) {
		t.Fatalf("listener ended with %v", err)
	}

	stall.mu.Lock()
	defer stall.mu.Unlock()
	if len(stall.lost) > 0 {
		t.Fatalf("the stalled loop found %d of its numbers gone from the ring (first %d)", len(stall.lost), stall.lost[0])
	}
	if h.dropped.Load() != 0 || received.Load() != int64(accepted) {
		t.Fatalf("listener beside it: %d dropped, %d of %d events", h.dropped.Load(), received.Load(), accepted)
	}
	// The test proves something only if it came near the edge the ring is
	// sized for: 66 full batches (its own, 64 in its channel, 1 in its
	// shard goroutine's hands) and the queue behind them. A few batches
	// may be short when a loaded machine pauses the publisher (seen: 997
	// and 1005 of 1025 under the race build with both cores busy).
	span := newest - stall.oldest + 1
	if worst := uint64(queue + 66*batchSize); span < worst-3*batchSize || stall.batches < 66 {
		t.Fatalf("spanned only %d numbers (%d batches); the worst case is %d", span, stall.batches, worst)
	}
	t.Logf("accepted %d; the stalled loop spanned %d numbers over %d batches; ring of %d", accepted, span, stall.batches, len(h.frames.slots))
}

func TestFrameRingForgetsOverwrittenFrames(t *testing.T) {
	r := newFrameRing(1)
	n := uint64(len(r.slots))
	frames := make([]*frame, 2*n+1)
	for seq := uint64(1); seq <= 2*n; seq++ {
		frames[seq] = newFrame(fmt.Appendf(nil, `{"n":%d}`, seq))
		r.put(frames[seq], seq)
	}
	for seq := uint64(1); seq <= 2*n; seq++ {
		got := r.get(seq)
		switch {
		case seq <= n && got != nil:
			t.Fatalf("frame %d was overwritten but get returned %q", seq, got.b)
		case seq > n && got != frames[seq]:
			t.Fatalf("frame %d: got %v", seq, got)
		}
	}
}

func TestParseRangeReadsWhatR3labsPrints(t *testing.T) {
	type r struct{ first, last uint64 }
	for in, want := range map[string]r{"1-1\n": {1, 1}, "18446744073-18446744080\n": {18446744073, 18446744080}, "42-56": {42, 56}} {
		if first, last, ok := parseRange([]byte(in)); !ok || first != want.first || last != want.last {
			t.Errorf("parseRange(%q) = %d, %d, %v", in, first, last, ok)
		}
	}
	for _, in := range []string{"\n", "", "x\n", "1\n", "-1\n", "1-\n", "2-1\n", "1-16\n", "1-2 \n", "12345678901234567890-12345678901234567890\n"} {
		if first, last, ok := parseRange([]byte(in)); ok {
			t.Errorf("parseRange(%q) = %d, %d, accepted", in, first, last)
		}
	}
	if got := string(appendRange(nil, 7, 21)); got != "7-21" {
		t.Errorf("appendRange = %q", got)
	}
}

// One huge event grows a write buffer; the pool must not keep it, or every
// listener's batch would hold that much from then on.
func TestWriteBuffersDropGrownBuffers(t *testing.T) {
	var w writeBuffers
	big := w.get()
	*big = append(*big, make([]byte, 4*maxBatch)...)
	w.put(big)
	for range 10 { // sync.Pool may return it at any Get: try a few
		if b := w.get(); cap(*b) > maxKeptBuffer {
			t.Fatalf("pool returned a buffer of %d bytes, over the %d kept", cap(*b), maxKeptBuffer)
		}
	}
}

// The bytes waiting for fan-out are bounded apart from their count: many
// small events may wait, a few large ones fill QueueBytes.
func TestSaturatedCountsTheBytesWaiting(t *testing.T) {
	h := newTestHub(t, Options{QueueSize: 100, QueueBytes: 1000, MaxLag: time.Minute})
	p, now := h.pump, time.Now()
	for _, c := range []struct {
		seq, queued, handedB uint64
		want                 bool
	}{
		{0, 5000, 0, false},   // nothing waits, whatever was published before
		{3, 999, 0, false},    // under QueueBytes
		{3, 1000, 0, true},    // QueueBytes wait
		{3, 1499, 500, false}, // 999 still wait once 500 were handed out
		{100, 10, 0, true},    // QueueSize events wait, however small
	} {
		p.handedB.Store(c.handedB)
		if got := p.saturated(c.seq, c.queued, now); got != c.want {
			t.Errorf("%d events and %d bytes published, %d bytes handed out: saturated = %v, want %v", c.seq, c.queued, c.handedB, got, c.want)
		}
	}
}

// The pace admission looks ahead with leaves out each window's slowest
// batch (a pause of the whole process, most often) and is the best of the
// last windows, but follows rounds that are slow for good.
func TestPaceLeavesOutOnePause(t *testing.T) {
	h := newTestHub(t, Options{MaxLag: time.Second}) // a window of 250 ms
	p := &pump{h: h, window: paceWindow(time.Second), maxLag: time.Second}
	for range paceBatches - 1 {
		p.pace(time.Millisecond)
	}
	p.pace(300 * time.Millisecond) // a pause: closes the window
	if got := time.Duration(p.perBatch.Load()); got != time.Millisecond {
		t.Errorf("pace after 7 batches of 1 ms and a pause of 300 ms = %s, want 1ms", got)
	}
	for range paceBatches {
		p.pace(40 * time.Millisecond) // a slow window
	}
	if got := time.Duration(p.perBatch.Load()); got != time.Millisecond {
		t.Errorf("pace after one slow window = %s, want still 1ms", got)
	}
	// A slow window in which an event waited half of MaxLag is taken at
	// its own pace: the fast windows before are not borne out.
	for range paceBatches {
		p.pace(40 * time.Millisecond)
		p.waited(600 * time.Millisecond)
	}
	if got := time.Duration(p.perBatch.Load()); got != 40*time.Millisecond {
		t.Errorf("pace after a slow window with a wait of 600 ms = %s, want 40ms", got)
	}
	for range paceWindows * paceBatches {
		p.pace(50 * time.Millisecond)
	}
	if got := time.Duration(p.perBatch.Load()); got != 50*time.Millisecond {
		t.Errorf("pace after %d windows of batches of 50 ms = %s, want 50ms", paceWindows, got)
	}
}
