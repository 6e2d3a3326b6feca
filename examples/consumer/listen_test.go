package consumer_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"event-dispatcher/examples/consumer"
	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
)

// runListen runs consumer.Listen against url until the test ends.
func runListen(t *testing.T, url string) client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan string, 4096)
	var wg sync.WaitGroup
	wg.Go(func() {
		consumer.Listen(ctx, url, func(data []byte) {
			select {
			case events <- string(data):
			case <-ctx.Done():
			}
		})
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return client{events: events, failed: func() error { return nil }}
}

// r3labs' own client, through the README's loop: every event and never an
// empty one (the stream's opening block stays invisible to it); a new
// subscription after the server ends the stream, where r3labs returns nil;
// events again after a 503.
func TestGoListen(t *testing.T) {
	checkScenarios(t, runListen)
}

// Listen returns soon after its context ends, also while r3labs' client is
// retrying a refused connection.
func TestGoListenStopsWithItsContext(t *testing.T) {
	t.Parallel()
	srv, sl := start(t, broadcast.Options{MaxListeners: 1})
	ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		consumer.Listen(ctx, srv.URL+"/events", func([]byte) {})
	}()
	ssetest.Eventually(t, 30*time.Second, "the client is refused twice", func() (bool, string) {
		_, refused := sl.counts()
		return refused >= 2, "fewer than two refusals logged"
	})
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second): // r3labs' own backoff would retry for 15 minutes
		t.Fatal("Listen still running 30 s after its context ended")
	}
}
