package server_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

const noBodyMsg = "only POST requests may have a body"

// rawAnswer reads one answer to a request of method from br, its body
// included, with a guard against a hang only.
func rawAnswer(t *testing.T, conn net.Conn, br *bufio.Reader, method string) ssetest.Response {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer's body: %v", err)
	}
	return ssetest.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// wantClosed fails unless the server closes conn with nothing more to
// read. The deadline only guards against a connection left open.
func wantClosed(t *testing.T, conn net.Conn, br *bufio.Reader) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := br.ReadByte()
	switch {
	case err == nil:
		rest, _ := br.Peek(br.Buffered())
		t.Errorf("connection still open: read %q", append([]byte{b}, rest...))
	case !errors.Is(err, io.EOF) && !isConnCut(err):
		t.Errorf("connection not closed by the server: %v", err)
	}
}

// Over raw TCP: an HTTP client would not send these requests as written.
func TestRequestBodiesTheServiceDoesNotReadCloseTheConnection(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{MaxBodyBytes: 1024})
	listener := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	cases := []struct {
		name, req string
		method    string // of the request, for reading the answer
		status    int
		msg       string // "" for any JSON error, or no body
		event     string // what the listener must receive, if published
	}{
		{"GET stream declaring a body it never sends",
			"GET /events HTTP/1.1\r\nHost: d\r\nContent-Length: 1000\r\n\r\n", "GET", 400, noBodyMsg, ""},
		{"GET stream alias with a chunked body never sent",
			"GET /event-dispatcher HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", 400, noBodyMsg, ""},
		{"GET health with a body",
			"GET /health HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\n{}", "GET", 400, noBodyMsg, ""},
		{"HEAD health declaring a body",
			"HEAD /health HTTP/1.1\r\nHost: d\r\nContent-Length: 1000\r\n\r\n", "HEAD", 400, "", ""},
		{"preflight declaring a body",
			"OPTIONS /events HTTP/1.1\r\nHost: d\r\nContent-Length: 1000\r\n\r\n", "OPTIONS", 204, "", ""},
		{"POST to the stream declaring a body it never sends",
			"POST /event-dispatcher HTTP/1.1\r\nHost: d\r\nContent-Length: 1000\r\n\r\n", "POST", 405, "", ""},
		{"POST to an unknown path declaring a body it never sends",
			"POST /nope HTTP/1.1\r\nHost: d\r\nContent-Length: 1000\r\n\r\n", "POST", 404, "", ""},
		{"POST beyond MAX_BODY_BYTES declared, never sent",
			"POST /api/events HTTP/1.1\r\nHost: d\r\nContent-Length: 100000\r\n\r\n", "POST", 413, "body exceeds 1024 bytes", ""},
		{"POST chunked",
			"POST /api/events HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n{\"te\":1}\n\r\n0\r\n\r\n", "POST", 204, "", `{"te":1}`},
		// The smuggling attempt: Content-Length says the body ends after
		// "9\r\n", Transfer-Encoding after the last chunk. Whatever follows
		// (here a request for /health) must never be answered.
		{"POST with both Content-Length and Transfer-Encoding",
			"POST /metrics HTTP/1.1\r\nHost: d\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n{\"cl\":2}\n\r\n0\r\n\r\nGET /health HTTP/1.1\r\nHost: d\r\n\r\n",
			"POST", 204, "", `{"cl":2}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.event == "" { // the listener reads in order
				t.Parallel()
			}
			conn := srv.Dial(t)
			if _, err := io.WriteString(conn, c.req); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			r := rawAnswer(t, conn, br, c.method)
			switch {
			case c.status == http.StatusNoContent || c.method == http.MethodHead:
				if r.Status != c.status {
					t.Errorf("status %d, want %d (body %s)", r.Status, c.status, r.Body)
				}
			default:
				wantError(t, r, c.status, c.msg, nil)
			}
			wantClosed(t, conn, br)
			if c.event != "" {
				if got := listener.NextData(t, within(t, 10*time.Second)); got != c.event {
					t.Errorf("listener got %q, want %q", got, c.event)
				}
			}
		})
	}
}

// A POST whose Content-Length body was read to the end keeps its
// connection: keep-alive publishers pay no reconnection.
func TestPostReadToTheEndKeepsTheConnection(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	conn := srv.Dial(t)
	br := bufio.NewReader(conn)
	for i, body := range []string{`{"n":1}`, `{"n":`, `{"n":3}`} {
		if _, err := fmt.Fprintf(conn, "POST /api/events HTTP/1.1\r\nHost: d\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		r := rawAnswer(t, conn, br, http.MethodPost)
		want := http.StatusNoContent
		if i == 1 {
			want = http.StatusBadRequest // invalid, but read to the end
		}
		if r.Status != want || r.Header.Get("Connection") == "close" {
			t.Fatalf("request %d: status %d, Connection %q; want %d on a kept connection", i, r.Status, r.Header.Get("Connection"), want)
		}
	}
}

// GET /events declaring a body it never sends once held a listener slot
// forever: net/http waited for the body before the first byte. With
// MAX_SUBSCRIBERS such requests, a real listener must still get in.
func TestStreamRequestsWithABodyDoNotPinListenerSlots(t *testing.T) {
	t.Parallel()
	const slots = 6
	srv := ssetest.Start(t, broadcast.Options{MaxListeners: slots}, server.Options{})
	pins := make([]net.Conn, slots)
	for i := range pins {
		pins[i] = srv.Dial(t)
		req := "GET /events HTTP/1.1\r\nHost: d\r\nContent-Length: 1000\r\n\r\n"
		if i%2 == 1 {
			req = "GET /event-dispatcher HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
		}
		if _, err := io.WriteString(pins[i], req); err != nil {
			t.Fatal(err)
		}
	}
	// Every pin is answered 400 and closed, whether or not it reads.
	for i, conn := range pins[:slots/2] {
		br := bufio.NewReader(conn)
		wantError(t, rawAnswer(t, conn, br, http.MethodGet), http.StatusBadRequest, noBodyMsg, nil)
		wantClosed(t, conn, br)
		t.Logf("pin %d answered and closed", i)
	}
	// The others never read their answer; the real listener gets in.
	s := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	srv.Publish(t, []byte(`{"real":"listener"}`))
	if got := s.NextData(t, within(t, 10*time.Second)); got != `{"real":"listener"}` {
		t.Errorf("listener got %q", got)
	}
	if h, _ := srv.Health(t); h.Listeners != 1 {
		t.Errorf("health listeners = %d, want 1: the real one", h.Listeners)
	}
}

// A client that sends its request and half-closes its side leaves at once:
// net/http sees the EOF and ends the stream, releasing the slot.
func TestHalfClosedStreamReleasesItsSlot(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{MaxListeners: 1}, server.Options{})
	conn := srv.Dial(t)
	if _, err := io.WriteString(conn, "GET /events HTTP/1.1\r\nHost: d\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	ssetest.Eventually(t, 10*time.Second, "the raw listener is connected", func() (bool, string) {
		h, _ := srv.Health(t)
		return h.Listeners == 1, fmt.Sprintf("%+v", h)
	})
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	ssetest.Eventually(t, 10*time.Second, "the half-closed listener is gone", func() (bool, string) {
		h, _ := srv.Health(t)
		return h.Listeners == 0, fmt.Sprintf("%+v", h)
	})
	s := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	srv.Publish(t, []byte(`{"after":"half-close"}`))
	if got := s.NextData(t, within(t, 10*time.Second)); got != `{"after":"half-close"}` {
		t.Errorf("listener got %q", got)
	}
}

// A client that pipelines requests and never reads the answers fills the
// socket buffers until the server's write blocks; the write deadline cuts
// it off instead of holding the connection and its goroutine forever.
func TestClientThatNeverReadsItsAnswersIsCutOff(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{WriteTimeout: 200 * time.Millisecond})
	// A small receive buffer, so the server's writes block after a few
	// hundred answers rather than many thousands.
	conn := dialSmallReceiveBuffer(t, srv.Addr)

	const maxRequests = 1_000_000
	req := strings.Repeat("GET /health HTTP/1.1\r\nHost: d\r\n\r\n", 64)
	var (
		wg   sync.WaitGroup
		sent int
		werr error
	)
	done := make(chan struct{})
	wg.Go(func() {
		defer close(done)
		for sent = 0; sent < maxRequests; sent += 64 {
			if _, werr = io.WriteString(conn, req); werr != nil {
				return
			}
		}
	})
	select {
	case <-done:
	case <-time.After(60 * time.Second): // a guard against a hang only
		_ = conn.Close()
		wg.Wait()
		t.Fatalf("the server still held the connection after 60 s (%d requests sent)", sent)
	}
	if werr == nil {
		t.Fatalf("sent %d requests without reading an answer and the server kept reading them", sent)
	}
	if !isConnCut(werr) {
		t.Fatalf("writing requests: %v, want the connection cut", werr)
	}
	t.Logf("connection cut after %d requests: %v", sent, werr)
	// Others are unaffected.
	if _, code := srv.Health(t); code != http.StatusOK {
		t.Errorf("health %d after the cut", code)
	}
}

// The answer to a POST comes after its body: a body that never arrives gets
// its 408 even when BODY_READ_TIMEOUT is as long as WRITE_TIMEOUT (both
// 10 s by default), rather than a write deadline that expired while the
// body was awaited and a connection closed without a word.
func TestTrickledBodyGets408WhenBodyTimeoutEqualsWriteTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{BodyReadTimeout: timeout, WriteTimeout: timeout})
	for _, req := range []string{
		"POST /api/events HTTP/1.1\r\nHost: d\r\nContent-Length: 64\r\n\r\n{",
		"POST /metrics HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n",
	} {
		conn := srv.Dial(t)
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		wantError(t, rawAnswer(t, conn, br, "POST"), http.StatusRequestTimeout, "body not received within "+timeout.String(), nil)
	}
}
