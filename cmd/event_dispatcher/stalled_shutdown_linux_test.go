package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
)

// A listener whose client takes nothing cannot hold the shutdown past
// SHUTDOWN_TIMEOUT, even when SHUTDOWN_TIMEOUT is shorter than
// WRITE_TIMEOUT (a configuration that starts, with a warning): its last
// write is cut at the deadline, the process exits, and every other
// listener got every event and the end of its stream.
func TestShutdownCutsStalledListenerAtShutdownTimeout(t *testing.T) {
	// WRITE_TIMEOUT far beyond the test's guard: had the stalled write been
	// left to it, the process would still be running when the guard fires.
	const shutdownTimeout, writeTimeout = 3 * time.Second, 30 * time.Minute
	p := startProcess(t, nil, "PORT=0", "SHUTDOWN_TIMEOUT="+shutdownTimeout.String(), "WRITE_TIMEOUT="+writeTimeout.String(),
		"SUBSCRIBER_BUFFER_BYTES=268435456") // the stalled listener is never dropped as slow
	_, base := p.listening(t)
	if recs := p.stdout.records("risky setting"); len(recs) != 1 || recs[0]["variable"] != "SHUTDOWN_TIMEOUT" {
		t.Errorf("risky setting lines %v, want one naming SHUTDOWN_TIMEOUT", recs)
	}

	guard, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{}}
	stalled := dialStalled(t, base)
	if _, err := fmt.Fprintf(stalled, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	const nReaders = 2
	results := readToTheEnd(t, guard, client, base, nReaders)
	ssetest.Eventually(t, 30*time.Second, "three listeners", func() (bool, string) {
		n := listenersOf(t, base)
		return n == 3, fmt.Sprint(n, " listeners")
	})

	// Far more than the loopback socket buffers hold (4 MiB send, a small
	// receive buffer): the stalled listener's write blocks.
	pad := strings.Repeat("x", 60000)
	const events = 200
	for seq := range events {
		body := fmt.Sprintf(`{"seq":%d,"pad":%q}`, seq, pad)
		resp, err := client.Post(base+"/metrics", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("POST %d: %d", seq, resp.StatusCode)
		}
	}
	if n := listenersOf(t, base); n != 3 {
		t.Fatalf("%d listeners after publishing, want 3 (the stalled one was dropped?)", n)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The guard is a tiny fraction of WRITE_TIMEOUT: exiting before it
	// means the stalled write did not run its course.
	if code := p.exit(t, 2*time.Minute); code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, p.stderr)
	}
	t.Logf("stopped: %v", p.stdout.records("stopped"))
	// The stalled listener was cut at the shutdown deadline, not dropped
	// as stalled (WRITE_TIMEOUT never came). Its line races the exit, so
	// it may be missing; when there, it says so.
	if recs := p.stdout.records("listener dropped"); len(recs) != 0 {
		t.Errorf("listener dropped lines %v, want none", recs)
	}
	for _, r := range p.stdout.records("listener cut at shutdown") {
		if reason, _ := r["reason"].(string); !strings.HasPrefix(reason, "cut at the shutdown deadline") {
			t.Errorf("cut listener's reason %q", reason)
		}
	}
	wantEveryEventThenTheEnd(t, results, events)
}

// dialStalled connects to base with a small receive buffer, a client that
// will never read; closed at cleanup.
func dialStalled(t *testing.T, base string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// listenersOf returns the listener count /health reports.
func listenersOf(t *testing.T, base string) int64 {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(base + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h ssetest.Health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return h.Listeners
}
