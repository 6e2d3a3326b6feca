//go:build unix

package server_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"time"

	"event-dispatcher/pkg/access"
)

// BenchmarkFilteredIngest measures the process CPU time per accepted POST
// (cpu-µs/post, from getrusage: every goroutine counts) through the real
// ingest and stream handlers and hub, with in-process listeners that
// discard what they get (no sockets: the hub's own cost). Each iteration
// posts the START message with one of 1000 session ids. With
// pace=one-by-one it then waits until every listener owed the event has
// it, so every event travels alone; with pace=back-to-back it posts the
// next at once (waiting out 503s, which costs no CPU), so the hub batches
// them as it does under load, and the run ends when everything is
// delivered.
//
//   - listeners=1000/filter=none: every listener takes every event (1000
//     deliveries per POST), the service before filters;
//   - listeners=1000/filter=session_id: each listener asks for its own
//     session (?session_id=sN), so each POST reaches one of them;
//   - listeners=1/filter=none: one listener takes every event, the same
//     deliveries as the filtered case without the 999 listeners that skip
//     it.
func BenchmarkFilteredIngest(b *testing.B) {
	for _, c := range []struct {
		listeners int
		filtered  bool
	}{{1000, false}, {1000, true}, {1, false}} {
		name := "none"
		if c.filtered {
			name = "session_id"
		}
		for _, oneByOne := range []bool{true, false} {
			pace := map[bool]string{true: "one-by-one", false: "back-to-back"}[oneByOne]
			b.Run(fmt.Sprintf("pace=%s/listeners=%d/filter=%s", pace, c.listeners, name), func(b *testing.B) {
				benchFilteredIngest(b, c.listeners, c.filtered, oneByOne)
			})
		}
	}
}

func benchFilteredIngest(b *testing.B, listeners int, filtered, oneByOne bool) {
	const sessions = 1000
	var ready, served sync.WaitGroup
	b.Cleanup(served.Wait)                       // cleanups run last-in first-out: after the hub's Close ended every stream
	srv := benchIngestServer(b, access.Policy{}) // room for 1000 listeners by default
	delivered := newBenchCounter()
	for i := range listeners {
		target := "/events"
		if filtered {
			target = fmt.Sprintf("/events?session_id=s%d", i)
		}
		sink := &benchListener{header: http.Header{}, ready: &ready, delivered: delivered}
		ready.Add(1)
		req := httptest.NewRequest(http.MethodGet, target, nil)
		served.Go(func() { srv.ServeHTTP(sink, req) })
	}
	subscribed := make(chan struct{})
	go func() { ready.Wait(); close(subscribed) }()
	select {
	case <-subscribed:
	case <-time.After(time.Minute): // a guard against a hang only
		b.Fatal("listeners did not all subscribe within a minute")
	}

	_, start := benchStartFixture(b)
	bodies := make([][]byte, sessions)
	for i := range bodies {
		bodies[i] = bytes.Replace(start, []byte(`"ebdb3da7-bc77-454e-9de0-a1dfa8091e84"`), fmt.Appendf(nil, `"s%d"`, i), 1)
	}
	perPost := int64(listeners)
	if filtered {
		perPost = 1
	}
	reader := bytes.NewReader(nil)
	req := httptest.NewRequest(http.MethodPost, "/api/events", nil)
	w := &benchResponse{header: http.Header{}}
	var want int64
	cpu0 := cpuTime()
	n := 0
	for b.Loop() {
		body := bodies[n%sessions]
		n++
		for {
			reader.Reset(body)
			req.Body, req.ContentLength = io.NopCloser(reader), int64(len(body))
			clear(w.header)
			srv.ServeHTTP(w, req)
			if w.code != http.StatusServiceUnavailable {
				break
			}
			time.Sleep(time.Millisecond) // the fan-out is behind: let it catch up
		}
		if w.code != http.StatusNoContent {
			b.Fatalf("status %d", w.code)
		}
		want += perPost
		if oneByOne {
			delivered.waitFor(want)
		}
	}
	delivered.waitFor(want)
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-µs/post")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchCounter counts deliveries and lets the benchmark wait for a total.
type benchCounter struct {
	mu   sync.Mutex
	cond *sync.Cond
	n    int64
}

func newBenchCounter() *benchCounter {
	c := &benchCounter{}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *benchCounter) add(n int64) {
	c.mu.Lock()
	c.n += n
	c.cond.Broadcast()
	c.mu.Unlock()
}

func (c *benchCounter) waitFor(n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.n < n {
		c.cond.Wait()
	}
}

// benchListener is an in-process stream client that discards what it
// gets, counting events. The hub writes to it from one goroutine at a time.
type benchListener struct {
	header    http.Header
	ready     *sync.WaitGroup
	subbed    bool
	delivered *benchCounter
}

func (l *benchListener) Header() http.Header { return l.header }
func (l *benchListener) WriteHeader(int)     {}
func (l *benchListener) Flush()              {}

func (l *benchListener) Write(p []byte) (int, error) {
	if !l.subbed && bytes.Contains(p, []byte("retry:")) { // after a byte order mark
		l.subbed = true
		l.ready.Done()
	}
	if n := bytes.Count(p, []byte("data: ")); n > 0 {
		l.delivered.add(int64(n))
	}
	return len(p), nil
}
