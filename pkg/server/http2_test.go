package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/access"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
	"event-dispatcher/pkg/tlscert"
)

// h2Modes are the two ways HTTP/2 reaches the public port: cleartext with
// prior knowledge, and TLS with ALPN.
var h2Modes = []string{"h2c", "tls"}

// startH2 starts the service and gives it a client that speaks HTTP/2 in
// mode: "h2c", or "tls" through the service's own TLS configuration
// (package tlscert) with a certificate made here. Every request of that
// client shares one connection. streamWindow is the flow-control window
// the client grants each stream (0: net/http's).
func startH2(t *testing.T, mode string, hub broadcast.Options, opts server.Options, streamWindow int) *ssetest.Server {
	t.Helper()
	if mode == "h2c" {
		srv := ssetest.Start(t, hub, opts)
		srv.Client = ssetest.H2CClient(t, streamWindow)
		return srv
	}
	certFile, keyFile, roots := ssetest.WriteCertificate(t, t.TempDir(), "dispatcher")
	certs, err := tlscert.New(certFile, keyFile, 0, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	srv := ssetest.StartTLS(t, hub, opts, certs.TLSConfig(), roots)
	srv.Client = ssetest.TLSClient(t, roots, streamWindow)
	return srv
}

// h2Stream is an SSE stream opened over HTTP/2, with the client side of the
// connection that carries it.
type h2Stream struct {
	*ssetest.Stream
	conn string // the connection's local address: equal for streams sharing it
}

// openH2 opens GET path on srv over HTTP/2 and requires 200 and the
// stream's first block (the retry hint, at once) before returning.
func openH2(t *testing.T, srv *ssetest.Server, path string) h2Stream {
	t.Helper()
	s, conn, status := tryOpenH2(t, srv, path)
	if status != http.StatusOK {
		t.Fatalf("GET %s over HTTP/2: status %d", path, status)
	}
	first, err := s.Next(within(t, 10*time.Second))
	if err != nil || first.Retry == "" || len(first.Data)+len(first.Comments) > 0 {
		t.Fatalf("GET %s over HTTP/2: first block %q, %v; want a retry hint at once", path, first.Raw, err)
	}
	return h2Stream{s, conn}
}

// getH2 sends one request over srv.Client, requires an answer over
// HTTP/2, and returns it with the connection's local address. The body is
// the caller's to close.
func getH2(t *testing.T, srv *ssetest.Server, method, path string, body io.Reader) (*http.Response, string) {
	t.Helper()
	var conn string
	trace := &httptrace.ClientTrace{GotConn: func(c httptrace.GotConnInfo) { conn = c.Conn.LocalAddr().String() }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), method, srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	if resp.ProtoMajor != 2 {
		t.Fatalf("%s %s: answered over %s, want HTTP/2", method, path, resp.Proto)
	}
	return resp, conn
}

// openRawH2 opens GET path over HTTP/2, reads its first block and returns
// the body unread beyond it, with the connection's local address.
func openRawH2(t *testing.T, srv *ssetest.Server, path string) (io.Reader, string) {
	t.Helper()
	resp, conn := getH2(t, srv, http.MethodGet, path, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200", path, resp.StatusCode)
	}
	br := bufio.NewReaderSize(resp.Body, 16)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("GET %s: reading the first block: %v", path, err)
		}
		if line == "\n" {
			return br, conn
		}
	}
}

// tryOpenH2 opens GET path over HTTP/2 and returns the stream whatever its
// status, which it returns too.
func tryOpenH2(t *testing.T, srv *ssetest.Server, path string) (*ssetest.Stream, string, int) {
	t.Helper()
	resp, conn := getH2(t, srv, http.MethodGet, path, nil)
	s := ssetest.FromResponse(resp)
	t.Cleanup(s.Close)
	return s, conn, resp.StatusCode
}

// Every listener gets every accepted event exactly once, in each
// publisher's order, byte for byte, when listeners and publishers all share
// one HTTP/2 connection.
func TestHTTP2DeliversEveryEventOnceInOrder(t *testing.T) {
	for _, mode := range h2Modes {
		t.Run(mode, func(t *testing.T) {
			srv := startH2(t, mode, broadcast.Options{Heartbeat: 20 * time.Millisecond}, server.Options{}, 0)
			const listeners, publishers, perPublisher = 3, 4, 25
			var streams []h2Stream
			for range listeners {
				streams = append(streams, openH2(t, srv, "/events"))
			}
			ctx := within(t, time.Minute)
			var waits []func() ([]string, error)
			for i, s := range streams {
				if s.conn != streams[0].conn {
					t.Fatalf("stream %d on connection %s, stream 0 on %s: want one connection", i, s.conn, streams[0].conn)
				}
				waits = append(waits, collect(ctx, s.Stream))
			}
			fixtures := loadValid(t)
			all, err := publishAll(ctx, srv, fixtures, publishers, perPublisher, nil)
			if err != nil {
				t.Fatal(err)
			}
			accepted, _ := acceptedOf(t, all, false)
			publishSentinel(t, srv, fixtures[0])
			for i, wait := range waits {
				got, err := wait()
				if err != nil {
					t.Fatalf("listener %d: %v", i, err)
				}
				checkDelivery(t, fmt.Sprintf("listener %d", i), got, accepted)
			}
		})
	}
}

// Over HTTP/2 a stream's write deadline resets the stream when it passes,
// writing or not: a stream with nothing to send (no event, no heartbeat)
// must outlive WRITE_TIMEOUT, as it does over HTTP/1.1. With heartbeats,
// they arrive.
func TestHTTP2QuietStreamOutlivesWriteTimeout(t *testing.T) {
	for _, mode := range h2Modes {
		t.Run(mode, func(t *testing.T) {
			const writeTimeout = 50 * time.Millisecond
			srv := startH2(t, mode, broadcast.Options{WriteTimeout: writeTimeout}, server.Options{WriteTimeout: writeTimeout}, 0)
			quiet := openH2(t, srv, "/events")
			time.Sleep(20 * writeTimeout) // many deadlines' worth of silence
			ev := []byte(`{"quiet":true}`)
			srv.Publish(t, ev)
			if got := quiet.NextData(t, within(t, 10*time.Second)); got != string(ev) {
				t.Fatalf("quiet stream: got %q, want %q", got, ev)
			}
			m := ssetest.Scrape(t, srv.Admin+"/metrics")
			if n := m.Samples[`event_dispatcher_listeners_dropped_total{reason="stalled"}`]; n != 0 {
				t.Errorf("%v listeners dropped as stalled, want 0", n)
			}
		})
	}
	t.Run("heartbeats", func(t *testing.T) {
		srv := startH2(t, "h2c", broadcast.Options{Heartbeat: 20 * time.Millisecond}, server.Options{}, 0)
		s := openH2(t, srv, "/events")
		e, err := s.Next(within(t, 10*time.Second))
		if err != nil || len(e.Comments) != 1 || e.Comments[0] != "hb" {
			t.Fatalf("after the first block: %q, %v; want the heartbeat comment", e.Raw, err)
		}
	})
}

// A stream its client stops reading is dropped as stalled after
// WRITE_TIMEOUT, while another stream on the same connection receives every
// event, before and after, and the connection stays open.
func TestHTTP2StalledStreamDroppedSiblingKeepsReceiving(t *testing.T) {
	for _, mode := range h2Modes {
		t.Run(mode, func(t *testing.T) {
			// A queue far larger than the test sends: only the write
			// deadline can drop the stalled stream. The client grants each
			// stream 64 KiB, so the stalled one blocks after that.
			srv := startH2(t, mode, broadcast.Options{
				BufferBytes: 1 << 30, WriteTimeout: 500 * time.Millisecond,
			}, server.Options{MaxBodyBytes: 1 << 20}, 64<<10)
			stalled, stalledConn := openRawH2(t, srv, "/events")
			sibling := openH2(t, srv, "/events")
			if stalledConn != sibling.conn {
				t.Fatalf("streams on %s and %s: want one connection", stalledConn, sibling.conn)
			}
			ctx := within(t, time.Minute)
			wait := collect(ctx, sibling.Stream)

			big := strings.Repeat("x", 16<<10)
			accepted := map[tag]string{}
			publish := func(seq int) {
				g := tag{Pub: 0, Seq: seq}
				body := fmt.Appendf(nil, `{"test_pub":0,"test_seq":%d,"pad":%q}`, seq, big)
				srv.Publish(t, body)
				accepted[g] = string(body)
			}
			stalledDrops := func() float64 {
				return ssetest.Scrape(t, srv.Admin+"/metrics").Samples[`event_dispatcher_listeners_dropped_total{reason="stalled"}`]
			}
			seq := 0
			for stalledDrops() == 0 {
				if seq > 2000 {
					t.Fatalf("the stalled stream was not dropped after %d events of 16 KiB", seq)
				}
				publish(seq)
				seq++
				time.Sleep(10 * time.Millisecond)
			}
			for range 10 { // after the drop, on the same connection
				publish(seq)
				seq++
			}
			publishSentinel(t, srv, []byte(`{}`))
			got, err := wait()
			if err != nil {
				t.Fatalf("sibling stream: %v", err)
			}
			checkDelivery(t, "sibling stream", got, accepted)
			if h, _ := srv.Health(t); h.Listeners != 1 || h.ListenersDropped != 1 {
				t.Errorf("health %+v: want 1 listener left and 1 dropped", h)
			}
			// The stalled stream was reset, not ended cleanly: what the
			// client holds of it ends in an error.
			if n, err := io.Copy(io.Discard, stalled); err == nil {
				t.Errorf("stalled stream: %d more bytes then a clean end, want a stream reset", n)
			}
			if again := openH2(t, srv, "/events"); again.conn != sibling.conn {
				t.Errorf("a new stream went to connection %s, want the sibling's %s still open", again.conn, sibling.conn)
			}
		})
	}
}

// doH2 sends one request over HTTP/2 and returns the answer's status and
// the connection's local address.
func doH2(t *testing.T, srv *ssetest.Server, method, path string, body io.Reader) (int, string) {
	t.Helper()
	resp, conn := getH2(t, srv, method, path, body)
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, conn
}

// Body limits and the body read timeout hold over HTTP/2, each refusal
// ends only its own stream: a listener on the same connection keeps
// receiving, and the next request uses the same connection.
func TestHTTP2PostLimitsEndOnlyTheirStream(t *testing.T) {
	for _, mode := range h2Modes {
		t.Run(mode, func(t *testing.T) {
			srv := startH2(t, mode, broadcast.Options{}, server.Options{MaxBodyBytes: 1024, BodyReadTimeout: 300 * time.Millisecond}, 0)
			listener := openH2(t, srv, "/events")
			large := `{"pad":"` + strings.Repeat("x", 2048) + `"}`
			stalled, feed := io.Pipe()
			t.Cleanup(func() { _ = feed.Close() })
			go func() { _, _ = io.WriteString(feed, `{"half":`) }() // and never the rest
			for _, c := range []struct {
				name string
				body io.Reader
				want int
			}{
				{"Content-Length too large", strings.NewReader(large), http.StatusRequestEntityTooLarge},
				{"streamed body too large", io.MultiReader(strings.NewReader(large)), http.StatusRequestEntityTooLarge},
				{"body never finished", stalled, http.StatusRequestTimeout},
				{"not JSON", strings.NewReader("nope"), http.StatusBadRequest},
			} {
				status, conn := doH2(t, srv, http.MethodPost, "/api/events", c.body)
				if status != c.want {
					t.Errorf("%s: status %d, want %d", c.name, status, c.want)
				}
				if conn != listener.conn {
					t.Errorf("%s: sent on connection %s, want the listener's %s", c.name, conn, listener.conn)
				}
			}
			ev := `{"after":"refusals"}`
			if status, _ := doH2(t, srv, http.MethodPost, "/api/events", strings.NewReader(ev)); status != http.StatusNoContent {
				t.Fatalf("valid event: status %d", status)
			}
			if got := listener.NextData(t, within(t, 10*time.Second)); got != ev {
				t.Fatalf("listener: got %q, want %q", got, ev)
			}
		})
	}
}

// MAX_LISTENERS_PER_IP counts streams, not connections; a request with a
// body on a stream route is refused at once and holds no slot; none of it
// closes the connection.
func TestHTTP2ListenerSlotsCountStreams(t *testing.T) {
	srv := startH2(t, "h2c", broadcast.Options{}, server.Options{
		Access: access.Policy{Streams: access.NewStreamLimiter(2)},
	}, 0)
	a := openH2(t, srv, "/events")
	b := openH2(t, srv, "/events")
	if a.conn != b.conn {
		t.Fatalf("streams on %s and %s: want one connection", a.conn, b.conn)
	}
	if s, conn, status := tryOpenH2(t, srv, "/events"); status != http.StatusTooManyRequests || conn != a.conn {
		t.Fatalf("third stream from the address: status %d on %s, want 429 on %s", status, conn, a.conn)
	} else {
		s.Close()
	}
	if status, conn := doH2(t, srv, http.MethodGet, "/events", strings.NewReader("a body")); status != http.StatusBadRequest || conn != a.conn {
		t.Errorf("GET /events with a body: status %d on %s, want 400 on %s", status, conn, a.conn)
	}
	if h, _ := srv.Health(t); h.Listeners != 2 {
		t.Errorf("%d listeners, want the 2 streams", h.Listeners)
	}
	a.Close()
	// The per-IP slot is given back when the stream's handler returns,
	// just after the hub counts the listener gone: retry until it is.
	ssetest.Eventually(t, 10*time.Second, "the closed stream's slot freed", func() (bool, string) {
		s, conn, status := tryOpenH2(t, srv, "/events")
		if status != http.StatusOK {
			s.Close()
			return false, fmt.Sprintf("status %d", status)
		}
		if conn != b.conn {
			t.Errorf("new stream on %s, want %s", conn, b.conn)
		}
		return true, ""
	})
}
