package grpcapi_test

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/grpcapi"
	"event-dispatcher/pkg/grpcapi/eventservicepb"
)

// tracker records what the server tells the connection caps, by the
// client's address.
type tracker struct {
	mu     sync.Mutex
	states map[string][]string
}

func (tr *tracker) note(c net.Conn, s string) {
	tr.mu.Lock()
	k := c.RemoteAddr().String()
	tr.states[k] = append(tr.states[k], s)
	tr.mu.Unlock()
}
func (tr *tracker) Idle(c net.Conn) { tr.note(c, "idle") }
func (tr *tracker) Busy(c net.Conn) { tr.note(c, "busy") }
func (tr *tracker) Stream(c net.Conn) func() {
	tr.note(c, "stream")
	return func() { tr.note(c, "stream end") }
}

// of is what client connection c was told so far.
func (tr *tracker) of(c net.Conn) []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.states[c.LocalAddr().String()]...)
}

// A PushEvent whose HEADERS arrive and whose message never completes (a
// raw HTTP/2 client announcing 100 bytes and sending one) ends with
// DeadlineExceeded once MessageTimeout has passed, is counted as refused
// for timeout, and leaves its connection idle again: the stream is free
// and the connection may be closed for room. Another call on the same
// connection still works, and a Subscribe whose request came in time is
// not cut by that deadline.
func TestTrickledRequestMessageEndsTheCall(t *testing.T) {
	tr := &tracker{states: map[string][]string{}}
	svc := start(t, grpcapi.Options{MessageTimeout: 300 * time.Millisecond, Conns: tr})
	ctx := within(t, 60*time.Second)
	sub := svc.subscribe(t, ctx, svc.client, nil)

	c, err := net.Dial("tcp", svc.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	status := ssetest.StalledGRPCCall(t, c, eventservicepb.EventService_PushEvent_FullMethodName)
	if status != "4" { // codes.DeadlineExceeded
		t.Fatalf("grpc-status %s, want 4 (DeadlineExceeded)", status)
	}
	svc.wantMetrics(t, `event_dispatcher_events_rejected_total{reason="timeout"} 1`)

	// The call's end reached the caps: its connection is idle again, while
	// the subscription's connection still carries its stream.
	ssetest.Eventually(t, 30*time.Second, "the connection is idle again", func() (bool, string) {
		got := tr.of(c)
		return len(got) >= 2 && got[len(got)-2] == "busy" && got[len(got)-1] == "idle", fmt.Sprint(got)
	})

	// The subscription, older than the deadline, still gets events.
	if _, err := svc.client.PushEvent(ctx, push("after", []byte(`{"ok":true}`))); err != nil {
		t.Fatal(err)
	}
	if ev, err := sub.Recv(); err != nil || !bytes.Contains([]byte(ev.GetJson()), []byte(`"ok":true`)) {
		t.Fatalf("subscription after the deadline: %v, %v", ev, err)
	}
}
