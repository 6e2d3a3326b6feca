package broadcast_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
)

// A Close that times out on a listener whose socket takes nothing returns
// at its deadline and cuts that listener's write then, whatever the write
// timeout: its handler returns, and every goroutine the hub started is
// gone. Not parallel: it counts goroutines.
func TestTimedOutCloseLeaksNothing(t *testing.T) {
	baseline := runtime.NumGoroutine()
	// Far beyond the test's guards: only the cut at Close's deadline can
	// end the blocked write in time.
	const writeTimeout = time.Hour
	hub, err := broadcast.New(broadcast.Options{
		QueueSize: 4096, MaxLag: time.Minute, MaxListeners: 4, BufferBytes: 1 << 30, WriteTimeout: writeTimeout,
		Heartbeat: 50 * time.Millisecond, Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := hub.Serve(w, r)
		served <- err
	}))
	// A listener that never reads, so the hub's writes to it block.
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: dispatcher\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	ssetest.Eventually(t, 10*time.Second, "listener connected", func() (bool, string) {
		n := hub.Stats().Listeners
		return n == 1, fmt.Sprint(n, " listeners")
	})
	// Far more than loopback socket buffers hold.
	event := []byte(`{"pad":"` + strings.Repeat("p", 16<<10) + `"}`)
	for i := range 2000 {
		if err := hub.Publish(event); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := hub.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v, want it to time out on the listener that reads nothing", err)
	}
	select {
	case err := <-served:
		if !errors.Is(err, broadcast.ErrCutAtShutdown) {
			t.Errorf("stream ended by %v, want its write cut at the shutdown deadline", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the listener's handler still runs a minute after Close's deadline")
	}
	// A cut at shutdown is no drop: neither slow nor stalled.
	if c := hub.Counters(); c.DroppedStalled != 0 || c.DroppedSlow != 0 || hub.Stats().ListenersDropped != 0 {
		t.Errorf("cut listener counted as dropped: %d stalled, %d slow, %d dropped", c.DroppedStalled, c.DroppedSlow, hub.Stats().ListenersDropped)
	}
	ts.Close()
	ssetest.Eventually(t, time.Minute, "goroutines back to the baseline", func() (bool, string) {
		n := runtime.NumGoroutine()
		return n <= baseline, fmt.Sprintf("%d goroutines, baseline %d", n, baseline)
	})
}
