package server_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/connlimit"
	"event-dispatcher/pkg/server"
)

// h2cFrom is a client speaking cleartext HTTP/2 from the loopback address
// ip: its requests share one connection.
func h2cFrom(t *testing.T, ip string) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	tr := &http.Transport{Protocols: &p, DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// At the total cap with nothing idle, the request in flight closed for room
// is never on an HTTP/2 connection carrying a stream, even one that also
// carries a stalled POST: the stream handler marks its connection through
// the request's context, and that context is the connection's over HTTP/2
// too.
func TestHTTP2ConnectionWithAStreamIsNotClosedForRoom(t *testing.T) {
	srv, lim := ssetest.StartCapped(t, broadcast.Options{}, server.Options{}, connlimit.Options{Max: 2})
	ctx := within(t, 30*time.Second)
	h2 := h2cFrom(t, "127.0.0.2")
	stream := ssetest.Subscribe(t, h2, srv.URL+"/events", nil)
	body, stall := io.Pipe()
	t.Cleanup(func() { _ = stall.Close() })
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/api/events", body)
		if resp, err := h2.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	if _, err := stall.Write([]byte("{")); err != nil { // the handler is reading it
		t.Fatal(err)
	}

	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	slow, err := d.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	_, _ = slow.Write([]byte("POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 64\r\nExpect: 100-continue\r\n\r\n"))
	cont := make([]byte, len("HTTP/1.1 100 Continue\r\n\r\n"))
	_ = slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(slow, cont); err != nil || !strings.HasPrefix(string(cont), "HTTP/1.1 100") {
		t.Fatalf("the HTTP/1.1 POST was not taken in: %q, %v", cont, err)
	}

	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}).DialContext}}
	resp, err := other.Get(srv.URL + "/health")
	if err != nil {
		t.Fatalf("GET /health from another address at the cap: %v", err)
	}
	resp.Body.Close()
	if _, err := slow.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("the HTTP/1.1 POST in flight was not the one closed for room: %v", err)
	}
	// Straight to the hub: a POST would be one more connection at the
	// cap, refused while the other address's request has answered but not
	// yet turned idle on the server's side.
	if err := srv.Hub.Publish([]byte(`{"event_name":"kept"}`)); err != nil {
		t.Fatal(err)
	}
	if got := stream.NextData(t, ctx); got != `{"event_name":"kept"}` {
		t.Fatalf("the HTTP/2 stream got %s", got)
	}
	if st := lim.Stats(); st.ClosedBusy != 1 {
		t.Fatalf("stats %+v, want 1 request in flight closed", st)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
