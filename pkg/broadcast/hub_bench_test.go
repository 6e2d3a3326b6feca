package broadcast

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func benchHub(b *testing.B, listeners int) *Hub {
	hub, err := New(Options{MaxListeners: listeners + 1, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := hub.Close(ctx); err != nil {
			b.Error(err)
		}
	})
	return hub
}

// benchArrivals counts events arriving at n listeners and signals each time
// all of them have one more. Each listener receives every event once and
// only one event is in flight at a time, so the total reaching a multiple
// of n means every listener has the latest event.
type benchArrivals struct {
	n    int64
	got  atomic.Int64
	done chan struct{}
}

func newBenchArrivals(n int) *benchArrivals {
	return &benchArrivals{n: int64(n), done: make(chan struct{}, 1)}
}

func (a *benchArrivals) add(events int) {
	for range events {
		if a.got.Add(1)%a.n == 0 {
			a.done <- struct{}{}
		}
	}
}

// runFanout publishes one event per iteration and waits until every
// listener has received it: ns/op is the time for one event to reach all.
func runFanout(b *testing.B, hub *Hub, arrivals *benchArrivals, listeners int) {
	ev := benchEvent(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := hub.Publish(ev); err != nil {
			b.Fatal(err)
		}
		<-arrivals.done
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(listeners), "ns/delivery")
}

// BenchmarkFanout measures the real Hub delivering one event to every
// listener. With transport=http each listener is a real HTTP connection
// (httptest server, SSE parsed from the socket), so ns/op and allocs
// include the client side as well. With transport=sink the listeners are
// in-process writers that discard what they get (see benchSink): the hub
// alone, which is what 10000 listeners on one machine can measure.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("transport=http/listeners=%d", n), func(b *testing.B) { benchFanoutHTTP(b, n) })
	}
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("transport=sink/listeners=%d", n), func(b *testing.B) { benchFanoutSink(b, n) })
	}
}

func benchFanoutHTTP(b *testing.B, n int) {
	var hub *Hub
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = hub.Serve(w, r)
	}))
	b.Cleanup(ts.Close) // cleanups run last-in first-out: after the hub's Close ended every stream
	hub = benchHub(b, n)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	arrivals := newBenchArrivals(n)
	var ready sync.WaitGroup
	for range n {
		resp, err := client.Get(ts.URL)
		if err != nil {
			b.Fatal(err)
		}
		ready.Add(1)
		go func() {
			defer resp.Body.Close()
			r := bufio.NewReader(resp.Body)
			first := true
			for {
				line, err := r.ReadSlice('\n')
				if err != nil {
					return // the hub closed the stream
				}
				switch {
				case first:
					first = false
					ready.Done() // the retry hint: subscribed
				case bytes.HasPrefix(line, []byte("data: ")):
					arrivals.add(1)
				}
			}
		}()
	}
	ready.Wait()
	runFanout(b, hub, arrivals, n)
}

// benchSink is an in-process http.ResponseWriter for the hub-only
// benchmark. It implements Flush, which the hub needs; it cannot set write
// deadlines (the hub ignores that error). httptest.ResponseRecorder would
// not do: its body grows without bound and the benchmark could not read it
// while the listener's drain goroutine writes, without a data race. The hub
// writes to one listener's writer from one goroutine at a time, so the sink
// needs no lock of its own.
type benchSink struct {
	header   http.Header
	ready    *sync.WaitGroup
	subbed   bool
	arrivals *benchArrivals
}

func (s *benchSink) Header() http.Header { return s.header }
func (s *benchSink) WriteHeader(int)     {}
func (s *benchSink) Flush()              {}

// Write sees the retry hint first, then events, possibly several per call
// when the listener coalesced them.
func (s *benchSink) Write(p []byte) (int, error) {
	if !s.subbed && bytes.Contains(p, []byte("retry:")) {
		s.subbed = true
		s.ready.Done()
	}
	if n := bytes.Count(p, []byte("data: ")); n > 0 {
		s.arrivals.add(n)
	}
	return len(p), nil
}

func benchFanoutSink(b *testing.B, n int) {
	var ready, served sync.WaitGroup
	b.Cleanup(served.Wait) // cleanups run last-in first-out: after the hub's Close ended every stream
	hub := benchHub(b, n)
	arrivals := newBenchArrivals(n)
	ready.Add(n)
	for range n {
		sink := &benchSink{header: http.Header{}, ready: &ready, arrivals: arrivals}
		req := httptest.NewRequest(http.MethodGet, "/events", nil)
		served.Go(func() { _, _ = hub.Serve(sink, req) })
	}
	ready.Wait()
	runFanout(b, hub, arrivals, n)
}

// BenchmarkFrameReleaseScan is one look of the frame release over 3000
// members spread over the shards: what it does every releaseEvery while
// frames are held (ns/op × 20 per second is its CPU time).
func BenchmarkFrameReleaseScan(b *testing.B) {
	hub := benchHub(b, 1)
	shards := hub.pump.shards
	subs := make([]*subscription, 3000)
	for i := range subs {
		subs[i] = &subscription{sh: shards[i%len(shards)]}
		subs[i].sh.join(subs[i])
	}
	b.Cleanup(func() {
		for _, s := range subs {
			s.sh.leave(s)
		}
	})
	b.ReportAllocs()
	for b.Loop() {
		target := uint64(1 << 40)
		for _, sh := range shards {
			target = sh.lowest(target)
		}
	}
}
