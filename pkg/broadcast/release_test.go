package broadcast

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"weak"
)

// Memory follows the work: once every listener has written an event, or
// was dropped, nothing in the hub holds it, whatever the queue size; with
// no listener at all, once it was handed out. Weak pointers to the frames
// tell whether anything still references them after a collection.
func TestFramesReleasedOnceEveryListenerHasThem(t *testing.T) {
	// The readers' queues hold the whole burst and their writes have time:
	// on a loaded machine a reader descheduled for a moment must not be
	// dropped as slow or stalled. The stalled listener is dropped when a
	// write has waited WriteTimeout.
	h := newTestHub(t, Options{QueueSize: 8192, MaxLag: time.Minute, WriteTimeout: 2 * time.Second, BufferBytes: 32 << 20})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = h.Serve(w, r) }))
	defer ts.Close()

	var readers [2]atomic.Int64
	for i := range readers {
		resp, err := http.Get(ts.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		go func() {
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				if bytes.HasPrefix(sc.Bytes(), []byte("data: ")) {
					readers[i].Add(1)
				}
			}
		}()
	}
	// A listener that reads nothing: dropped as stalled.
	stalled, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, err := io.WriteString(stalled, "GET / HTTP/1.1\r\nHost: hub\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "three listeners", func() bool { return h.Stats().Listeners == 3 })

	const events = 300
	pad := strings.Repeat("p", 60000) // 18 MB in all: far more than the stalled one's socket takes
	frames := publishWatched(t, h, events, pad)
	ok := false
	for deadline := time.Now().Add(time.Minute); !ok && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		ok = readers[0].Load() == events && readers[1].Load() == events && h.Stats().ListenersDropped == 1
	}
	if !ok {
		c := h.Counters()
		t.Fatalf("readers got %d and %d of %d events; %d listeners dropped (%d slow, %d stalled), want only the one that reads nothing",
			readers[0].Load(), readers[1].Load(), events, c.ListenersDropped, c.DroppedSlow, c.DroppedStalled)
	}
	eventually(t, time.Minute, "every frame released", func() bool { return released(frames) == len(frames) })
}

// With nobody listening, a frame is released once handed out.
func TestFramesReleasedWithoutListeners(t *testing.T) {
	h := newTestHub(t, Options{QueueSize: 8192, MaxLag: time.Minute})
	frames := publishWatched(t, h, 100, "")
	eventually(t, time.Minute, "every frame released", func() bool { return released(frames) == len(frames) })
}

// publishWatched publishes n events and returns weak pointers to their
// frames.
func publishWatched(t *testing.T, h *Hub, n int, pad string) []weak.Pointer[frame] {
	t.Helper()
	var frames []weak.Pointer[frame]
	watched := 0
	for i := range n {
		if err := h.Publish(fmt.Appendf(nil, `{"n":%d,"pad":%q}`, i, pad)); err != nil {
			t.Fatal(err)
		}
		f := h.frames.get(h.seq.Load()) // the only publisher: its number
		if f != nil {
			watched++
		}
		frames = append(frames, weak.Make(f))
	}
	if watched == 0 {
		t.Fatal("every frame gone before it could be watched: the test cannot tell")
	}
	return frames
}

// released collects garbage and counts the frames gone.
func released(frames []weak.Pointer[frame]) int {
	runtime.GC()
	n := 0
	for _, f := range frames {
		if f.Value() == nil {
			n++
		}
	}
	return n
}

// The frame release reads the lowest number every member of a shard has
// taken; members come and go in any order, and a departure moves another
// member's slot. The shard must keep exactly those still there, and after
// a mass departure not keep a slice sized for the crowd.
func TestShardMembersComeAndGo(t *testing.T) {
	sh := &shard{}
	subs := make([]*subscription, 200)
	for i := range subs {
		subs[i] = &subscription{sh: sh}
		sh.received.Store(uint64(100 + i)) // each joins later, having taken more
		sh.join(subs[i])
	}
	if got := sh.lowest(1000); got != 100 {
		t.Fatalf("lowest with all joined: %d, want 100", got)
	}
	left := map[*subscription]bool{}
	for i := 0; i < len(subs); i += 3 { // the first, and every third after it
		sh.leave(subs[i])
		left[subs[i]] = true
	}
	if got := sh.lowest(1000); got != 101 {
		t.Fatalf("lowest once the first left: %d, want 101", got)
	}
	for i, s := range sh.members {
		if int(s.slot) != i || left[s] {
			t.Fatalf("member at %d: slot %d, left %v", i, s.slot, left[s])
		}
	}
	if want := len(subs) - len(left); len(sh.members) != want {
		t.Fatalf("%d members, want %d", len(sh.members), want)
	}
	for _, s := range subs {
		if !left[s] {
			sh.leave(s)
		}
	}
	if len(sh.members) != 0 || cap(sh.members) > 64 {
		t.Fatalf("after everyone left: %d members in a slice of %d", len(sh.members), cap(sh.members))
	}
	if got := sh.lowest(1000); got != 1000 {
		t.Fatalf("lowest with no member: %d, want 1000", got)
	}
}
