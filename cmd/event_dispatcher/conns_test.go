package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/grpcapi/eventservicepb"
)

// clientFrom is an HTTP client whose connections come from the loopback
// address ip (any 127.0.0.0/8 address works on Linux).
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// flood opens n connections from ip, each sending one GET /health and then
// sitting idle, kept alive, as the attacker did. It returns once
// every connection is established; they close at cleanup.
func flood(t *testing.T, addr, ip string, n int) {
	t.Helper()
	floodWith(t, addr, ip, n, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
}

// floodWith is flood with first as what each connection sends (nothing
// when empty).
func floodWith(t *testing.T, addr, ip string, n int, first string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("flood from %s: %v", ip, err)
		}
		conns = append(conns, c)
		if first != "" {
			// The write may fail on a connection already closed for room.
			_, _ = c.Write([]byte(first))
		}
	}
}

// Thousands of idle keep-alive connections from two addresses, against a
// binary allowed 512 descriptors (about 2,000 more than it could hold without
// caps): the stream opened before the flood keeps receiving, and another
// address still gets a listener in, an event published, /health and the
// admin /livez answered.
func TestConnectionFloodLeavesRoomForOthers(t *testing.T) {
	needPrlimit(t)
	p, base, addr, admin := startWith512(t, "MAX_SUBSCRIBERS=100")
	caps := p.stdout.waitFor(t, "connection caps", p.gone, 10*time.Second)
	if caps["descriptor_limit"] != 512.0 || caps["max_connections"] != 448.0 || caps["max_connections_per_ip"] != 224.0 {
		t.Fatalf("caps derived from 512 descriptors: %v", caps)
	}

	early := ssetest.Subscribe(t, clientFrom("127.0.0.1"), base+"/events", nil)
	const perAddress = 1500
	flood(t, addr, "127.0.0.1", perAddress)
	flood(t, addr, "127.0.0.3", perAddress)
	floodHandled(t, admin, 2*perAddress+1)
	m := ssetest.Scrape(t, admin+"/metrics")
	if open := m.Samples["event_dispatcher_connections"]; open > 448 {
		t.Fatalf("%v connections held, over the cap of 448", open)
	}
	if m.Samples[`event_dispatcher_connections_idle_closed_total{reason="per_ip"}`] == 0 {
		t.Fatal("no idle connection closed at the per-IP cap")
	}

	stillServed(t, p, base, admin, early, "127.0.0.2")
}

// trickle opens up to n connections from ip, each a POST whose headers are
// complete and whose body has begun, one byte of 64, and then stalls: a
// request in flight, not a stream. Each waits for the server's
// "100 Continue", proof that its handler is reading the body, before the
// next one is opened; those closed by the server instead are dropped. It
// returns how many are held; they close at cleanup.
func trickle(t *testing.T, addr, ip string, n int) int {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	const head = "POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 64\r\nExpect: 100-continue\r\n\r\n"
	held := 0
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("trickle from %s: %v", ip, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		line := make([]byte, len("HTTP/1.1 100 Continue\r\n\r\n"))
		if _, err := c.Write([]byte(head)); err != nil {
			continue
		}
		if _, err := io.ReadFull(c, line); err != nil || !strings.HasPrefix(string(line), "HTTP/1.1 100 ") {
			_ = c.Close() // refused at once, or closed for room
			continue
		}
		if _, err := c.Write([]byte("{")); err == nil {
			held++
		}
	}
	return held
}

// Two addresses fill MAX_CONNECTIONS with POSTs whose bodies never end
// (BODY_READ_TIMEOUT raised so that they last the whole test; an attacker
// would reconnect as they are cut): a third address still gets a listener
// in and an event published, /health and /livez answer, and the stream
// opened before the flood keeps receiving. The requests closed for room
// are the flooding addresses' own.
func TestBusyConnectionFloodLeavesRoomForOthers(t *testing.T) {
	needPrlimit(t)
	p, base, addr, admin := startWith512(t, "MAX_SUBSCRIBERS=100", "BODY_READ_TIMEOUT=5m")
	early := ssetest.Subscribe(t, clientFrom("127.0.0.1"), base+"/events", nil)
	// 224 each at most (MAX_CONNECTIONS_PER_IP); 448 in all, the stream
	// included: every connection is busy or a stream.
	held := trickle(t, addr, "127.0.0.2", 240) + trickle(t, addr, "127.0.0.3", 240)
	if held != 447 {
		t.Fatalf("%d POSTs held from two addresses, want 447 (448 less the stream)", held)
	}

	stillServed(t, p, base, admin, early, "127.0.0.4")
	m := ssetest.Scrape(t, admin+"/metrics")
	if open := m.Samples["event_dispatcher_connections"]; open > 448 {
		t.Fatalf("%v connections held, over the cap of 448", open)
	}
	if m.Samples["event_dispatcher_connections_busy_closed_total"] == 0 {
		t.Fatal("no request in flight counted as closed for room")
	}
}

// MAX_SUBSCRIBERS above what MAX_CONNECTIONS can hold still starts, with a
// warning, and admits listeners up to 90 % of MAX_CONNECTIONS only: the
// rest of the connections stay for POSTs and /health.
func TestListenersLeaveConnectionsForOthers(t *testing.T) {
	p := startProcess(t, nil, "PORT=0", "MAX_CONNECTIONS=20", "MAX_SUBSCRIBERS=50")
	_, base := p.listening(t)
	recs := p.stdout.records("risky setting")
	if len(recs) != 1 || recs[0]["variable"] != "MAX_SUBSCRIBERS" || recs[0]["max_listeners"] != 18.0 {
		t.Fatalf("risky setting lines %v, want one naming MAX_SUBSCRIBERS, 18 listeners", recs)
	}
	client := clientFrom("127.0.0.1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var first *ssetest.Stream
	for i := range 18 {
		s := ssetest.Subscribe(t, client, base+"/events", nil)
		if i == 0 {
			first = s
		}
	}
	resp, err := client.Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("listener 19 of MAX_CONNECTIONS 20: status %d, want 503", resp.StatusCode)
	}
	if resp, err = client.Get(base + "/health"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /health beside 18 listeners: %v, %v", resp, err)
	}
	resp.Body.Close()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/events", strings.NewReader(`{"n":1}`))
	if resp, err = client.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST beside 18 listeners: %v, %v", resp, err)
	}
	resp.Body.Close()
	if got := first.NextData(t, ctx); got != `{"n":1}` {
		t.Fatalf("listener got %s", got)
	}
}

// stillServed checks that, during a flood, the address ip gets a listener
// in and an event published that both it and early, the stream opened
// before the flood, receive; that /health and the admin /livez answer;
// and that the flood was logged.
func stillServed(t *testing.T, p *process, base, admin string, early *ssetest.Stream, ip string) {
	t.Helper()
	other := clientFrom(ip)
	late := ssetest.Subscribe(t, other, base+"/events", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/events", strings.NewReader(`{"event_name":"during_flood"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := other.Do(req)
	if err != nil {
		t.Fatalf("POST from another address during the flood: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST from another address: status %d", resp.StatusCode)
	}
	for name, s := range map[string]*ssetest.Stream{"the stream opened before the flood": early, "a new listener": late} {
		if got := s.NextData(t, ctx); got != `{"event_name":"during_flood"}` {
			t.Fatalf("%s got %s", name, got)
		}
	}
	for _, url := range []string{base + "/health", admin + "/livez"} {
		resp, err := other.Get(url)
		if err != nil {
			t.Fatalf("GET %s during the flood: %v", url, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s during the flood: status %d", url, resp.StatusCode)
		}
	}
	if len(p.stdout.records("connection cap reached: idle connections closed or new ones refused")) == 0 {
		t.Fatal("the flood was not logged")
	}
}

// startWith512 starts the binary allowed 512 descriptors (MAX_CONNECTIONS
// 448 by default), with env, and returns its public port's base URL and
// address and its admin port's base URL.
func startWith512(t *testing.T, env ...string) (p *process, base, addr, admin string) {
	t.Helper()
	p = startCommand(t, exec.Command("prlimit", "--nofile=512:512", binary), env...)
	rec, base := p.listening(t)
	admin = "http://" + net.JoinHostPort("127.0.0.1", portOf(t, rec["admin_addr"]))
	return p, base, strings.TrimPrefix(base, "http://"), admin
}

// needPrlimit fails the test under CI=true, or skips it elsewhere, when
// prlimit, which lowers the binary's descriptor limit, is missing.
func needPrlimit(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("prlimit"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("prlimit (util-linux) is needed")
		}
		t.Skip("prlimit (util-linux) not installed")
	}
}

// floodHandled waits until every one of the n connections opened has been
// admitted (closing an idle one) or refused: the caps' counters account for
// all but those still held.
func floodHandled(t *testing.T, admin string, n int) {
	t.Helper()
	ssetest.Eventually(t, 60*time.Second, "the flood is processed", func() (bool, string) {
		m, err := ssetest.ScrapeErr(admin + "/metrics")
		if err != nil {
			return false, err.Error()
		}
		handled := 0.0
		for _, r := range []string{"total", "per_ip"} {
			handled += m.Samples[fmt.Sprintf(`event_dispatcher_connections_refused_total{reason=%q}`, r)]
			handled += m.Samples[fmt.Sprintf(`event_dispatcher_connections_idle_closed_total{reason=%q}`, r)]
		}
		open := m.Samples["event_dispatcher_connections"]
		return handled+open == float64(n), fmt.Sprintf("%v handled, %v open", handled, open)
	})
}

func portOf(t *testing.T, addr any) string {
	t.Helper()
	s, _ := addr.(string)
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		t.Fatalf("address %q: %v", s, err)
	}
	return port
}

// grpcFrom is a gRPC client connection to addr from the loopback address ip.
func grpcFrom(t *testing.T, addr, ip string) *grpc.ClientConn {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// The gRPC port's connections count against the same caps as the public
// port's: thousands of connections that never finish their HTTP/2
// handshake, from two addresses, against a binary allowed 512 descriptors,
// leave a health Watch stream opened before them running, and another
// address still pushes an event by gRPC that reaches an SSE listener, with
// /health and /livez answered.
func TestGRPCConnectionFloodIsCapped(t *testing.T) {
	needPrlimit(t)
	p := startCommand(t, exec.Command("prlimit", "--nofile=512:512", binary), "MAX_SUBSCRIBERS=100", "GRPC_PORT=0", "SHUTDOWN_TIMEOUT=15s")
	rec, base := p.listening(t)
	admin := "http://" + net.JoinHostPort("127.0.0.1", portOf(t, rec["admin_addr"]))
	rpcAddr := net.JoinHostPort("127.0.0.1", portOf(t, rec["grpc_addr"]))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	wctx, endWatch := context.WithCancel(ctx)
	defer endWatch()
	watch, err := healthpb.NewHealthClient(grpcFrom(t, rpcAddr, "127.0.0.2")).Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Watch before the flood: %v, %v", r, err)
	}
	const perAddress = 1500
	floodWith(t, rpcAddr, "127.0.0.1", perAddress, "")
	floodWith(t, rpcAddr, "127.0.0.3", perAddress, "")
	floodHandled(t, admin, 2*perAddress+1)
	if open := ssetest.Scrape(t, admin+"/metrics").Samples["event_dispatcher_connections"]; open > 448 {
		t.Fatalf("%v connections held, over the cap of 448", open)
	}

	stream := ssetest.Subscribe(t, clientFrom("127.0.0.5"), base+"/events", nil)
	client := eventservicepb.NewEventServiceClient(grpcFrom(t, rpcAddr, "127.0.0.4"))
	req := &eventservicepb.PushEventRequest{Id: "1", Source: "/flood", Type: "t", Specversion: "1.0", Data: []byte(`{"a":1}`)}
	if _, err := client.PushEvent(ctx, req); err != nil {
		t.Fatalf("PushEvent from another address during the flood: %v", err)
	}
	if got := stream.NextData(t, ctx); !strings.Contains(got, `"source":"/flood"`) {
		t.Fatalf("listener got %s", got)
	}
	for _, url := range []string{base + "/health", admin + "/livez"} {
		resp, err := clientFrom("127.0.0.5").Get(url)
		if err != nil {
			t.Fatalf("GET %s during the flood: %v", url, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s during the flood: status %d", url, resp.StatusCode)
		}
	}
	// The Watch stream was never closed for room: it sees the drain.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health Watch opened before the flood, at the drain: %v, %v", r, err)
	}
	endWatch() // as a client would on NOT_SERVING; an open Watch holds the graceful stop
	p.exitedCleanly(t, 30*time.Second, "the gRPC server")
}

// One address holds most connections with streams (never closed for room),
// another trickles POST bodies on the rest, far fewer than MAX_CONNECTIONS
// over the addresses: its share is measured on what the streams leave, so
// a third address still gets a listener in and an event published, and
// /health and /livez answer.
func TestStreamsBesideTrickledPOSTsLeaveRoomForOthers(t *testing.T) {
	needPrlimit(t)
	p, base, addr, admin := startWith512(t, "BODY_READ_TIMEOUT=5m")
	// 403 listener slots (90 % of 448), 1 % of them kept for other
	// addresses: 395 streams from one address are all admitted.
	streams := clientFrom("127.0.0.2")
	early := ssetest.Subscribe(t, streams, base+"/events", nil)
	for range 394 {
		ssetest.Subscribe(t, streams, base+"/events", nil)
	}
	if held := trickle(t, addr, "127.0.0.3", 60); held != 448-395 {
		t.Fatalf("%d POSTs held beside 395 streams, want %d", held, 448-395)
	}
	if open := ssetest.Scrape(t, admin+"/metrics").Samples["event_dispatcher_connections"]; open != 448 {
		t.Fatalf("%v connections held, want the cap of 448", open)
	}

	stillServed(t, p, base, admin, early, "127.0.0.4")
	m := ssetest.Scrape(t, admin+"/metrics")
	if m.Samples["event_dispatcher_connections_busy_closed_total"] == 0 {
		t.Fatal("no trickled POST closed for room")
	}
	if l := m.Samples["event_dispatcher_listeners"]; l != 396 {
		t.Fatalf("%v listeners, want the 395 streams kept and the new one", l)
	}
}
