package server_test

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/access"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/clientip"
	"event-dispatcher/pkg/server"
)

// viaProxy is a resolver for a dispatcher behind a proxy on loopback: the
// tests' requests come from 127.0.0.1 and name their client in
// X-Forwarded-For, as a load balancer does.
func viaProxy() *clientip.Resolver {
	return clientip.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
}

func forwardedFor(ip string) http.Header { return http.Header{"X-Forwarded-For": {ip}} }

// One client flooding gets 429 with Retry-After beyond its rate, while
// another client's POSTs, sent during the flood, are all accepted and
// delivered, as is everything the flooder got accepted.
func TestPublishFloodFromOneIP(t *testing.T) {
	const rate, burst = 5, 10
	limiter := access.NewRateLimiter(rate, 0)
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{ClientIP: viaProxy(), Access: access.Policy{Publish: limiter}})
	listener := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	received := collect(within(t, 2*time.Minute), listener)
	body := loadValid(t)[0]

	var mu sync.Mutex
	accepted := map[tag]string{}
	post := func(ip string, g tag) ssetest.Response {
		ev := tagged(body, g)
		r, err := srv.Do(within(t, 10*time.Second), http.MethodPost, "/api/events", forwardedFor(ip), ev)
		if err != nil {
			t.Errorf("POST from %s: %v", ip, err)
			return r
		}
		if r.Status == http.StatusNoContent {
			mu.Lock()
			accepted[g] = compact(t, ev)
			mu.Unlock()
		}
		return r
	}

	const flooder, quiet = "203.0.113.9", "2001:db8:77::5"
	limited := make(chan struct{})
	stop := make(chan struct{})
	var floodOK, flood429 int
	var floodTime time.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		start := time.Now()
		for seq := 0; ; seq++ {
			select {
			case <-stop:
				floodTime = time.Since(start)
				return
			default:
			}
			switch r := post(flooder, tag{Pub: 0, Seq: seq}); r.Status {
			case http.StatusNoContent:
				floodOK++
			case http.StatusTooManyRequests:
				if flood429 == 0 {
					wantError(t, r, http.StatusTooManyRequests, "", nil)
					if ra := r.Header.Get("Retry-After"); ra != "1" {
						t.Errorf("Retry-After %q, want 1 (one event every %v)", ra, time.Second/rate)
					}
					close(limited)
				}
				flood429++
			default:
				t.Errorf("flood: status %d %s", r.Status, r.Body)
				floodTime = time.Since(start)
				return
			}
		}
	}()
	select {
	case <-limited:
	case <-done:
		t.Fatal("the flood ended before it was limited")
	}
	// Within its burst, the other client must never be refused, however
	// the flood goes.
	for seq := range burst - 2 {
		if r := post(quiet, tag{Pub: 1, Seq: seq}); r.Status != http.StatusNoContent {
			t.Errorf("quiet client's POST %d during the flood: status %d %s", seq, r.Status, r.Body)
		}
	}
	close(stop)
	<-done

	if flood429 == 0 || floodOK < burst {
		t.Errorf("flood: %d accepted, %d refused; want the burst of %d accepted, then refusals", floodOK, flood429, burst)
	}
	// A token bucket cannot have let through more than its burst plus what
	// refilled while the flood lasted.
	if most := burst + int(math.Ceil(rate*floodTime.Seconds())) + 1; floodOK > most {
		t.Errorf("flood: %d accepted in %v, at most %d allowed at %d/s with a burst of %d", floodOK, floodTime, most, rate, burst)
	}
	h, _ := srv.Health(t)
	if h.EventsRejected != uint64(flood429) || limiter.Refused() != uint64(flood429) {
		t.Errorf("events_rejected %d, limiter refused %d; want the %d 429s", h.EventsRejected, limiter.Refused(), flood429)
	}
	publishSentinel(t, srv, body)
	got, err := received()
	if err != nil {
		t.Fatal(err)
	}
	checkDelivery(t, "listener", got, accepted)
}

// A refused POST is answered before its body arrives: a client sending
// headers only gets its 429 at once, not after BODY_READ_TIMEOUT.
func TestPublishLimitDecidedBeforeTheBody(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{
		ClientIP: viaProxy(), BodyReadTimeout: 10 * time.Minute,
		Access: access.Policy{Publish: access.NewRateLimiter(0.01, 0)}, // burst 1, then one per 100 s
	})
	srv.Publish(t, []byte(`{"first":true}`)) // from 127.0.0.1: its allowance is now used
	conn := srv.Dial(t)
	_ = conn.SetDeadline(time.Now().Add(time.Minute)) // a guard: waiting for the body would take 10 minutes
	if _, err := io.WriteString(conn, "POST /api/events HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"partial\":"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer before the body was complete: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429", resp.StatusCode)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 90 || ra > 100 {
		t.Errorf("Retry-After %q, want about 100 (s)", resp.Header.Get("Retry-After"))
	}
}

// A refused POST leaves its kept-alive connection usable: requests
// pipelined behind a 429 (another refused POST, a health probe) are all
// answered on the same connection, in order. Closing it would cost every
// refusal a new connection and lose what followed.
func TestPublishRefusalKeepsTheConnection(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{
		Access: access.Policy{Publish: access.NewRateLimiter(0.01, 0)}, // burst 1, then one per 100 s
	})
	srv.Publish(t, []byte(`{"first":true}`)) // the allowance of 127.0.0.1 is now used
	conn := srv.Dial(t)
	_ = conn.SetDeadline(time.Now().Add(time.Minute)) // a guard against a hang
	event := `{"session_id":"s1","event_name":"START"}`
	pipeline := fmt.Sprintf("POST /api/events HTTP/1.1\r\nHost: d\r\nContent-Length: %d\r\n\r\n%s", len(event), event) +
		fmt.Sprintf("POST /metrics HTTP/1.1\r\nHost: d\r\nContent-Length: %d\r\n\r\n%s", len(event), event) +
		"GET /health HTTP/1.1\r\nHost: d\r\n\r\n"
	if _, err := io.WriteString(conn, pipeline); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for i, want := range []int{http.StatusTooManyRequests, http.StatusTooManyRequests, http.StatusOK} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d of 3: %v (the connection did not survive the refusal)", i+1, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("answer %d: reading the body: %v", i+1, err)
		}
		if resp.StatusCode != want || resp.Close {
			t.Errorf("answer %d: status %d, Connection: close %v; want %d on a kept connection (body %s)", i+1, resp.StatusCode, resp.Close, want, body)
		}
	}
}

// refusedMidBody sends request, headers and the start of a body, from a
// client whose allowance is used up, and returns the connection, its
// reader, and the 429 it got before the body was complete, read whole.
func refusedMidBody(t *testing.T, bodyReadTimeout time.Duration, request string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{
		BodyReadTimeout: bodyReadTimeout,
		Access:          access.Policy{Publish: access.NewRateLimiter(0.01, 0)},
	})
	srv.Publish(t, []byte(`{"first":true}`))
	conn := srv.Dial(t)
	_ = conn.SetDeadline(time.Now().Add(time.Minute)) // a guard, well below the 120 s idle timeout
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer before the body was complete: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429", resp.StatusCode)
	}
	return conn, br, resp
}

// A refused POST whose body stops half way gets its 429 at once and, once
// BODY_READ_TIMEOUT has passed, its connection closed: what is left of the
// body must never be read as the next request.
func TestPublishRefusalWithAStalledBody(t *testing.T) {
	// The rest of the body would be a request of its own.
	smuggled := "GET /health HTTP/1.1\r\nHost: d\r\n\r\n"
	conn, br, _ := refusedMidBody(t, 100*time.Millisecond,
		fmt.Sprintf("POST /api/events HTTP/1.1\r\nHost: d\r\nContent-Length: %d\r\n\r\n{", 1+len(smuggled)+100))
	time.Sleep(300 * time.Millisecond) // past BODY_READ_TIMEOUT: the server has given up on the body
	_, _ = io.WriteString(conn, smuggled)
	if resp, err := http.ReadResponse(br, nil); err == nil {
		resp.Body.Close()
		t.Fatalf("the rest of a refused body was served as a request: status %d", resp.StatusCode)
	} else if !isConnCut(err) {
		t.Fatalf("want the connection closed after the stalled body, got %v", err)
	}
}

// A refused chunked POST, whose connection is closed after any answer
// anyway, is not kept waiting for its body: the 429 comes at once and the
// connection closes right after, not after BODY_READ_TIMEOUT (10 minutes).
func TestPublishRefusalOfAChunkedBody(t *testing.T) {
	_, br, resp := refusedMidBody(t, 10*time.Minute,
		"POST /api/events HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"partial\":")
	if !resp.Close {
		t.Error("429 without Connection: close for a chunked body")
	}
	if _, err := br.ReadByte(); !isConnCut(err) {
		t.Fatalf("want the connection closed at once, got %v", err)
	}
}

// capRig is a dispatcher behind a loopback proxy that allows one stream
// per client.
func capRig(t *testing.T, hub broadcast.Options) (*ssetest.Server, *access.StreamLimiter) {
	t.Helper()
	streams := access.NewStreamLimiter(1)
	return ssetest.Start(t, hub, server.Options{ClientIP: viaProxy(), Access: access.Policy{Streams: streams}}), streams
}

// wantCapped checks that a second stream from ip is refused with 429.
func wantCapped(t *testing.T, srv *ssetest.Server, ip string) {
	t.Helper()
	r, err := srv.Do(within(t, 10*time.Second), http.MethodGet, "/events", forwardedFor(ip), nil)
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, r, http.StatusTooManyRequests, "", nil)
	if r.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
}

// waitReleased waits until ip holds no stream and no client is tracked.
func waitReleased(t *testing.T, streams *access.StreamLimiter, ip string) {
	t.Helper()
	a := netip.MustParseAddr(ip)
	ssetest.Eventually(t, 20*time.Second, "the stream's slot released", func() (bool, string) {
		return streams.Open(a) == 0 && streams.Tracked() == 0, fmt.Sprintf("open %d, tracked %d", streams.Open(a), streams.Tracked())
	})
}

// MAX_LISTENERS_PER_IP refuses one stream too many with 429, other clients
// are unaffected, and the slot comes back exactly when the stream ends,
// whichever way it ends.
func TestListenersPerIP(t *testing.T) {
	const ip, other = "198.51.100.20", "198.51.100.21"

	t.Run("client goes away", func(t *testing.T) {
		srv, streams := capRig(t, broadcast.Options{})
		s := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", forwardedFor(ip))
		wantCapped(t, srv, ip)
		o := ssetest.Subscribe(t, srv.Client, srv.URL+"/event-dispatcher", forwardedFor(other))
		if n := streams.Open(netip.MustParseAddr(ip)); n != 1 {
			t.Errorf("%d streams counted for %s, want 1", n, ip)
		}
		s.Close()
		o.Close()
		waitReleased(t, streams, ip)
		ssetest.Subscribe(t, srv.Client, srv.URL+"/events", forwardedFor(ip))
	})

	t.Run("maximum stream duration", func(t *testing.T) {
		srv, streams := capRig(t, broadcast.Options{MaxStreamDuration: 300 * time.Millisecond})
		s := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", forwardedFor(ip))
		wantCapped(t, srv, ip)
		waitEnded(t, s)
		waitReleased(t, streams, ip)
		ssetest.Subscribe(t, srv.Client, srv.URL+"/events", forwardedFor(ip))
	})

	t.Run("dropped as too slow", func(t *testing.T) {
		srv, streams := capRig(t, broadcast.Options{BufferBytes: 64 << 10, WriteTimeout: 200 * time.Millisecond})
		conn := srv.Dial(t) // asks for a stream, then never reads
		if _, err := io.WriteString(conn, "GET /events HTTP/1.1\r\nHost: d\r\nX-Forwarded-For: "+ip+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		ssetest.Eventually(t, 10*time.Second, "the silent listener subscribed", func() (bool, string) {
			h, _ := srv.Health(t)
			return h.Listeners == 1, fmt.Sprintf("%+v", h)
		})
		wantCapped(t, srv, ip)
		big := ssetest.WithMembers([]byte(`{}`), `"pad":"`+strings.Repeat("p", 16<<10)+`"`)
		for i := 0; ; i++ {
			if h, _ := srv.Health(t); h.ListenersDropped == 1 {
				break
			} else if i == 5000 {
				t.Fatalf("the silent listener was never dropped: %+v", h)
			}
			srv.Publish(t, big)
		}
		waitReleased(t, streams, ip)
		ssetest.Subscribe(t, srv.Client, srv.URL+"/events", forwardedFor(ip))
	})

	t.Run("shutdown", func(t *testing.T) {
		srv, streams := capRig(t, broadcast.Options{})
		s := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", forwardedFor(ip))
		wantCapped(t, srv, ip)
		if err := srv.Hub.Close(within(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		waitEnded(t, s)
		waitReleased(t, streams, ip)
	})

	t.Run("refused by MAX_SUBSCRIBERS", func(t *testing.T) {
		srv, streams := capRig(t, broadcast.Options{MaxListeners: 1})
		ssetest.Subscribe(t, srv.Client, srv.URL+"/events", forwardedFor(other))
		r, err := srv.Do(within(t, 10*time.Second), http.MethodGet, "/events", forwardedFor(ip), nil)
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, r, http.StatusServiceUnavailable, "", nil)
		if n := streams.Open(netip.MustParseAddr(ip)); n != 0 {
			t.Errorf("a refused stream still counts: %d open for %s", n, ip)
		}
	})
}

// waitEnded reads s until the server ends it.
func waitEnded(t *testing.T, s *ssetest.Stream) {
	t.Helper()
	ctx := within(t, 20*time.Second)
	for {
		if _, err := s.Next(ctx); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("stream not ended: %v", err)
			}
			return
		}
	}
}

// 100,000 distinct clients behind a trusted proxy, IPv4 and IPv6, each
// POST once: none is refused (each is new) and the per-client state never
// exceeds its bound. Streams from distinct clients leave nothing behind.
func TestPerIPStateBounded(t *testing.T) {
	const clients, workers = 100_000, 4
	publish := access.NewRateLimiter(1, access.MaxTrackedClients)
	streams := access.NewStreamLimiter(1)
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{ClientIP: viaProxy(), Access: access.Policy{Publish: publish, Streams: streams}})

	clientAddr := func(i int) string {
		if i%2 == 0 {
			return fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255)
		}
		// One /48 each, 128 in each /32: /64s of one /48, and /48s of one
		// /32 past 4,096, share a bucket once the limiter is half full (see
		// access.RateLimiter).
		return fmt.Sprintf("2001:%x:%x::1", i>>8, i&0xff)
	}
	// Pipelined on a few raw connections: 100,000 round trips through a
	// client would take minutes under the race detector.
	var most atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			conn := srv.Dial(t)
			_ = conn.SetDeadline(time.Now().Add(5 * time.Minute)) // a guard against a hang only
			go func() {
				bw := bufio.NewWriter(conn)
				for i := w; i < clients; i += workers {
					// An empty body: the limit is decided first, then 400.
					fmt.Fprintf(bw, "POST /api/events HTTP/1.1\r\nHost: d\r\nX-Forwarded-For: %s\r\nContent-Length: 0\r\n\r\n", clientAddr(i))
				}
				_ = bw.Flush()
			}()
			br := bufio.NewReader(conn)
			for i := w; i < clients; i += workers {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Errorf("client %s: %v", clientAddr(i), err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadRequest {
					t.Errorf("client %s: status %d; want 400 (never 429 for a new client)", clientAddr(i), resp.StatusCode)
					return
				}
				if i%1000 < workers {
					n := int64(publish.Tracked())
					for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
					}
				}
			}
		})
	}
	wg.Wait()
	if n := publish.Tracked(); n != access.MaxTrackedClients || most.Load() > access.MaxTrackedClients {
		t.Errorf("rate state: %d clients tracked at the end, at most %d seen; want exactly the bound %d", n, most.Load(), access.MaxTrackedClients)
	}

	for i := range 200 {
		s := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", forwardedFor(clientAddr(i)))
		s.Close()
	}
	ssetest.Eventually(t, 20*time.Second, "no stream state left", func() (bool, string) {
		return streams.Tracked() == 0, fmt.Sprintf("%d clients tracked", streams.Tracked())
	})
}
