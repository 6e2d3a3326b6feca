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
	h := newTestHub(t, Options{QueueSize: 8192, MaxLag: time.Minute, WriteTimeout: 100 * time.Millisecond})
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
	// A listener that reads nothing: dropped, as too slow or stalled.
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
	pad := strings.Repeat("p", 60000) // far more than the stalled one's socket and queue hold
	frames := publishWatched(t, h, events, pad)
	eventually(t, time.Minute, "both readers got every event and the stalled listener was dropped", func() bool {
		return readers[0].Load() == events && readers[1].Load() == events && h.Stats().ListenersDropped == 1
	})
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
