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
// at its deadline, and once that listener's write has timed out every
// goroutine the hub started is gone. Not parallel: it counts goroutines.
func TestTimedOutCloseLeaksNothing(t *testing.T) {
	baseline := runtime.NumGoroutine()
	// Long enough that the listener is still blocked, not yet dropped, when
	// Close runs on a loaded machine.
	const writeTimeout = 5 * time.Second
	hub, err := broadcast.New(broadcast.Options{
		QueueSize: 4096, MaxLag: time.Minute, MaxListeners: 4, BufferBytes: 1 << 30, WriteTimeout: writeTimeout,
		Heartbeat: 50 * time.Millisecond, Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = hub.Serve(w, r)
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
	ts.Close() // returns once the listener's handler has, within the write timeout
	ssetest.Eventually(t, 4*writeTimeout, "goroutines back to the baseline", func() (bool, string) {
		n := runtime.NumGoroutine()
		return n <= baseline, fmt.Sprintf("%d goroutines, baseline %d", n, baseline)
	})
}
