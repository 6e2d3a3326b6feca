package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
)

// validFixtures names the real player messages that must be accepted.
func validFixtures() []string {
	return []string{"start.json", "start-web.json", "heartbeat.json", "stop.json", "error.json"}
}

// loadValid returns the valid fixtures, pretty-printed as shipped.
func loadValid(t testing.TB) [][]byte {
	t.Helper()
	var out [][]byte
	for _, name := range validFixtures() {
		out = append(out, ssetest.Fixture(t, name))
	}
	return out
}

// within returns a context that ends after d or at the end of the test.
// Its deadline only guards against a hang.
func within(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// compact is what a listener must receive for body: encoding/json's
// Compact, which only removes insignificant whitespace.
func compact(t testing.TB, body []byte) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, body); err != nil {
		t.Fatalf("fixture is not valid JSON: %v", err)
	}
	return b.String()
}

// tag tells events apart: which publisher sent it, and its position in
// that publisher's sequence.
type tag struct {
	Pub int `json:"test_pub"`
	Seq int `json:"test_seq"`
}

// sentinelPub is the publisher of the event that marks the end of a run.
const sentinelPub = -1

// tagged returns body with the tag as its first members.
func tagged(body []byte, g tag) []byte {
	return ssetest.WithMembers(body, fmt.Sprintf(`"test_pub":%d,"test_seq":%d`, g.Pub, g.Seq))
}

func tagOf(data string) (tag, error) {
	g := tag{Pub: -2}
	if err := json.Unmarshal([]byte(data), &g); err != nil || g.Pub == -2 {
		return g, fmt.Errorf("untagged event %.80q", data)
	}
	return g, nil
}

// collect reads s in the background until the sentinel event arrives and
// returns a function that waits for that and gives every data line seen
// before it, in order. Heartbeat comments are skipped; any other block is
// an error.
func collect(ctx context.Context, s *ssetest.Stream) func() ([]string, error) {
	type result struct {
		got []string
		err error
	}
	done := make(chan result, 1)
	go func() {
		var got []string
		for {
			e, err := s.Next(ctx)
			if err != nil {
				done <- result{got, fmt.Errorf("after %d events: %w", len(got), err)}
				return
			}
			if e.IsComment() {
				continue
			}
			if len(e.Data) != 1 || e.Retry != "" || len(e.Other)+len(e.Comments) > 0 {
				done <- result{got, fmt.Errorf("block %.120q is not one data line", e.Raw)}
				return
			}
			if g, err := tagOf(e.Data[0]); err == nil && g.Pub == sentinelPub {
				done <- result{got, nil}
				return
			}
			got = append(got, e.Data[0])
		}
	}()
	return func() ([]string, error) {
		r := <-done
		return r.got, r.err
	}
}

// checkDelivery fails the test unless got holds every accepted event
// exactly once, byte for byte, and each publisher's events in the order it
// sent them.
func checkDelivery(t testing.TB, who string, got []string, accepted map[tag]string) {
	t.Helper()
	seen := make(map[tag]bool, len(got))
	last := map[int]int{}
	for i, data := range got {
		g, err := tagOf(data)
		if err != nil {
			t.Errorf("%s: event %d: %v", who, i, err)
			continue
		}
		want, ok := accepted[g]
		switch {
		case !ok:
			t.Errorf("%s: event %d %+v was never accepted", who, i, g)
		case seen[g]:
			t.Errorf("%s: event %+v delivered twice", who, g)
		case data != want:
			t.Errorf("%s: event %+v bytes differ:\n got %.200q\nwant %.200q", who, g, data, want)
		}
		if prev, ok := last[g.Pub]; ok && g.Seq <= prev {
			t.Errorf("%s: publisher %d: seq %d arrived after %d", who, g.Pub, g.Seq, prev)
		}
		seen[g], last[g.Pub] = true, g.Seq
	}
	if len(seen) != len(accepted) {
		var missing []tag
		for g := range accepted {
			if !seen[g] {
				missing = append(missing, g)
			}
		}
		t.Errorf("%s: %d of %d accepted events missing, e.g. %v", who, len(missing), len(accepted), missing[:min(5, len(missing))])
	}
}

// publishSentinel posts the end-of-run marker, retrying while the queue is
// full, so collect can stop.
func publishSentinel(t testing.TB, srv *ssetest.Server, body []byte) {
	t.Helper()
	ctx := within(t, 20*time.Second)
	for {
		r, err := srv.Post(ctx, "/api/events", "application/json", tagged(body, tag{Pub: sentinelPub}))
		switch {
		case err != nil:
			t.Fatalf("posting the sentinel: %v", err)
		case r.Status == http.StatusNoContent:
			return
		case r.Status != http.StatusServiceUnavailable:
			t.Fatalf("posting the sentinel: status %d %s", r.Status, r.Body)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wantError checks an error answer: the status, a JSON body that is
// exactly {"error": msg} (any non-empty message when msg is ""), and
// nothing of the request body echoed back.
func wantError(t testing.TB, r ssetest.Response, status int, msg string, sent []byte) {
	t.Helper()
	if r.Status != status {
		t.Errorf("status %d, want %d (body %s)", r.Status, status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var body map[string]any
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	if err := dec.Decode(&body); err != nil || dec.More() {
		t.Fatalf("body %q is not one JSON object: %v", r.Body, err)
	}
	got, ok := body["error"].(string)
	if len(body) != 1 || !ok || got == "" {
		t.Errorf(`body %s is not {"error": "<message>"}`, r.Body)
	}
	if msg != "" && got != msg {
		t.Errorf("error %q, want %q", got, msg)
	}
	if len(sent) >= 3 && bytes.Contains(r.Body, sent) {
		t.Errorf("error body %s echoes the request body", r.Body)
	}
	if bytes.Contains(r.Body, []byte("s3cr3t")) {
		t.Errorf("error body %s echoes a fragment of the request body", r.Body)
	}
}

// isConnCut reports whether err is the server closing the connection, as
// opposed to a hang (timeout) or something else.
func isConnCut(err error) bool {
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "EOF") || strings.Contains(s, "connection reset") || strings.Contains(s, "broken pipe")
}

// dialSmallReceiveBuffer connects to addr with a 4 KiB receive buffer, set
// before connecting so that the window stays small: a client that stops
// reading soon blocks the server's writes.
func dialSmallReceiveBuffer(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	conn, err := d.DialContext(within(t, 10*time.Second), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}
