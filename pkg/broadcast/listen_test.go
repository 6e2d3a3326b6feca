package broadcast_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

// collector is an EventWriter that keeps what it is given; block, when
// set, makes every call wait for it to close, ignoring ctx, as a transport
// with a stalled client might.
type collector struct {
	mu     sync.Mutex
	events []string
	calls  int
	block  chan struct{}
	inCall chan struct{} // receives once per call that blocks
}

func (c *collector) WriteEvents(ctx context.Context, events [][]byte) error {
	if c.block != nil {
		c.inCall <- struct{}{}
		<-c.block
		return ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	for _, e := range events {
		c.events = append(c.events, string(e)) // copied: the slices are shared
	}
	return nil
}

func (c *collector) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.events...)
}

// listen runs Hub.Listen in the background; the channel gets its result.
func listen(ctx context.Context, h *broadcast.Hub, f *broadcast.Filter, w broadcast.EventWriter) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := h.Listen(ctx, f, w)
		done <- err
	}()
	return done
}

func waitListeners(t *testing.T, h *broadcast.Hub, n int64) {
	t.Helper()
	ssetest.Eventually(t, 30*time.Second, fmt.Sprint(n, " listeners"), func() (bool, string) {
		got := h.Stats().Listeners
		return got == n, fmt.Sprint(got, " listeners")
	})
}

// A protocol-neutral listener gets every event POSTed after it subscribed,
// as the compact JSON the hub accepted, in order, with no SSE framing and
// no heartbeats; its filter applies; it counts like any listener, and
// Close ends it with ErrShutdown once everything accepted is written.
func TestListenDeliversEventsWithoutFraming(t *testing.T) {
	s := ssetest.Start(t, broadcast.Options{Heartbeat: 10 * time.Millisecond}, server.Options{})
	all, some := &collector{}, &collector{}
	doneAll := listen(t.Context(), s.Hub, nil, all)
	doneSome := listen(t.Context(), s.Hub, broadcast.NewFilter(broadcast.Term{Field: "kind", Values: []string{"a"}}), some)
	waitListeners(t, s.Hub, 2)

	var want, wantA []string
	for i := range 300 {
		kind := []string{"a", "b"}[i%2]
		s.Publish(t, fmt.Appendf(nil, "{ \"kind\" : %q, \"n\": %d }", kind, i))
		ev := fmt.Sprintf(`{"kind":%q,"n":%d}`, kind, i)
		want = append(want, ev)
		if kind == "a" {
			wantA = append(wantA, ev)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Hub.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for name, done := range map[string]<-chan error{"unfiltered": doneAll, "filtered": doneSome} {
		if err := <-done; !errors.Is(err, broadcast.ErrShutdown) {
			t.Errorf("%s listener ended with %v, want ErrShutdown", name, err)
		}
	}
	if got := all.got(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("unfiltered listener got %d events, want the %d published, in order, compact: first %q", len(got), len(want), got[:min(3, len(got))])
	}
	if got := some.got(); strings.Join(got, "\n") != strings.Join(wantA, "\n") {
		t.Errorf("filtered listener got %d events, want the %d of kind a", len(got), len(wantA))
	}
	if c := s.Hub.Counters(); c.Deliveries != uint64(len(want)+len(wantA)) {
		t.Errorf("deliveries %d, want %d", c.Deliveries, len(want)+len(wantA))
	}
}

// A neutral listener takes a place under MaxListeners like an SSE one, and
// its context ending ends it.
func TestListenCountsAgainstMaxListeners(t *testing.T) {
	s := ssetest.Start(t, broadcast.Options{MaxListeners: 1}, server.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	done := listen(ctx, s.Hub, nil, &collector{})
	waitListeners(t, s.Hub, 1)
	if _, err := s.Hub.Listen(t.Context(), nil, &collector{}); !errors.Is(err, broadcast.ErrTooMany) {
		t.Errorf("second Listen: %v, want ErrTooMany", err)
	}
	r, err := s.Do(t.Context(), http.MethodGet, "/events", nil, nil)
	if err != nil || r.Status != http.StatusServiceUnavailable {
		t.Errorf("GET /events with the one place taken: %v, status %d; want 503", err, r.Status)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Listen ended with %v, want context.Canceled", err)
	}
	waitListeners(t, s.Hub, 0)
}

// A writer that does not return within the write timeout, even ignoring
// its context, is dropped as stalled: Listen returns without waiting for
// it, the drop is counted, and the others go on.
func TestListenDropsAStalledWriter(t *testing.T) {
	s := ssetest.Start(t, broadcast.Options{WriteTimeout: 50 * time.Millisecond}, server.Options{})
	stalled := &collector{block: make(chan struct{}), inCall: make(chan struct{}, 1)}
	defer close(stalled.block)
	healthy := &collector{}
	doneStalled := listen(t.Context(), s.Hub, nil, stalled)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	doneHealthy := listen(ctx, s.Hub, nil, healthy)
	waitListeners(t, s.Hub, 2)

	s.Publish(t, []byte(`{"n":1}`))
	<-stalled.inCall
	if err := <-doneStalled; !errors.Is(err, broadcast.ErrStalled) {
		t.Fatalf("stalled listener ended with %v, want ErrStalled", err)
	}
	if c := s.Hub.Counters(); c.DroppedStalled != 1 {
		t.Errorf("DroppedStalled %d, want 1", c.DroppedStalled)
	}
	s.Publish(t, []byte(`{"n":2}`))
	ssetest.Eventually(t, 30*time.Second, "the other listener got both events", func() (bool, string) {
		got := healthy.got()
		return len(got) == 2, fmt.Sprint(got)
	})
	cancel()
	<-doneHealthy
}
