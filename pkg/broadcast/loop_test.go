package broadcast

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// testLoop is a real r3labs subscriber of one shard that the test controls:
// it can stop at its first batch until released, or take its time over
// each batch. It is counted by its shard like a listener, so the gate
// waits for it. It resolves every batch it is handed through the ring, as
// a listener does, and records what it could not find.
type testLoop struct {
	h      *Hub
	s      subscription // only the shard bookkeeping
	header http.Header
	delay  time.Duration // per batch

	stalled  chan struct{} // closed when it stops, if it was told to
	resume   chan struct{}
	released bool // loop goroutine only

	mu      sync.Mutex
	batches int
	numbers int64
	oldest  uint64 // smallest number it looked up
	lost    []uint64
}

func newTestLoop(h *Hub, shard int) *testLoop {
	lp := &testLoop{h: h, header: http.Header{}}
	lp.s.sh = h.pump.shards[shard]
	h.mu.Lock()
	lp.s.sh.assigned++ // listeners that Serve places go elsewhere
	h.mu.Unlock()
	return lp
}

// stall makes the loop stop at its first batch until release.
func (lp *testLoop) stall() {
	lp.stalled, lp.resume = make(chan struct{}), make(chan struct{})
}

func (lp *testLoop) release() { close(lp.resume) }

// start subscribes the loop until ctx ends, and returns once it is
// registered; the channel closes when r3labs has let go of it.
func (lp *testLoop) start(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		lp.h.subscribe(ctx, lp.s.sh, lp, &lp.s)
		lp.s.sh.leave(&lp.s)
	}()
	for !registered(lp.s.sh, &lp.s) {
		time.Sleep(time.Millisecond)
	}
	return done
}

func (lp *testLoop) Header() http.Header { return lp.header }
func (lp *testLoop) WriteHeader(int)     {}
func (lp *testLoop) Flush() {
	if !lp.s.confirmed {
		lp.s.sh.mu.Lock() // confirmed is read by registered
		lp.s.confirmed = true
		lp.s.sh.mu.Unlock()
		lp.s.sh.confirm(&lp.s)
	}
}

func (lp *testLoop) Write(p []byte) (int, error) {
	if !bytes.HasPrefix(p, []byte("data: ")) {
		return len(p), nil
	}
	if lp.stalled != nil && !lp.released {
		close(lp.stalled)
		<-lp.resume
		lp.released = true
	}
	time.Sleep(lp.delay)
	first, last, ok := parseRange(p[len("data: "):])
	lp.mu.Lock()
	if !ok {
		lp.lost = append(lp.lost, 0)
	}
	if lp.oldest == 0 {
		lp.oldest = first
	}
	lp.batches++
	for seq := first; ok && seq <= last; seq++ {
		lp.numbers++
		if lp.h.frames.get(seq) == nil {
			lp.lost = append(lp.lost, seq)
		}
	}
	lp.mu.Unlock()
	lp.s.sh.took(&lp.s, last)
	return len(p), nil
}

func (lp *testLoop) got() int64 {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	return lp.numbers
}

// live returns how many loops sh counts as registered.
func live(sh *shard) int {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.live
}

// registered reports whether s has been confirmed by its shard.
func registered(sh *shard, s *subscription) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return s.confirmed
}

// countingSink is a listener's response writer that counts the events.
type countingSink struct {
	header http.Header
	data   *atomic.Int64
}

func (s *countingSink) Header() http.Header { return s.header }
func (s *countingSink) WriteHeader(int)     {}
func (s *countingSink) Flush()              {}
func (s *countingSink) Write(p []byte) (int, error) {
	s.data.Add(int64(bytes.Count(p, []byte("data: "))))
	return len(p), nil
}
