//go:build unix

package consumer_test

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
)

// The README's curl loop (listen.sh): every event, a new curl after the
// server ends the stream, and after a 503.
func TestCurlListen(t *testing.T) {
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("the curl snippet test needs %s: %v", tool, err)
			}
			t.Skipf("the curl snippet test needs %s: %v (skipped outside CI)", tool, err)
		}
	}
	t.Run("every event", func(t *testing.T) {
		t.Parallel()
		srv, sl := start(t, broadcast.Options{Heartbeat: 20 * time.Millisecond})
		c := runCommand(t, ".", "bash", "listen.sh", srv.URL+"/events")
		publishUntilReceived(t, srv, sl, c, 1)
		checkEveryFixture(t, srv, c)
	})
	t.Run("again after the server ends the stream", func(t *testing.T) {
		t.Parallel()
		srv, sl := start(t, broadcast.Options{MaxStreamDuration: 300 * time.Millisecond})
		c := runCommand(t, ".", "bash", "listen.sh", srv.URL+"/events")
		publishUntilReceived(t, srv, sl, c, 3)
	})
	t.Run("again after a 503", func(t *testing.T) {
		t.Parallel()
		srv, sl := start(t, broadcast.Options{MaxListeners: 1})
		blocker := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
		c := runCommand(t, ".", "bash", "listen.sh", srv.URL+"/events")
		ssetest.Eventually(t, 30*time.Second, "the client is refused", func() (bool, string) {
			_, refused := sl.counts()
			return refused > 0, "no refusal logged"
		})
		blocker.Close()
		publishUntilReceived(t, srv, sl, c, 2)
	})
}
