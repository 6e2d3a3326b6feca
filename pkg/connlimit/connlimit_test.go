package connlimit_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/pkg/connlimit"
)

// harness accepts on a real loopback listener wrapped by connlimit.
type harness struct {
	t        *testing.T
	l        *connlimit.Listener
	accepted chan net.Conn
}

func start(t *testing.T, opts connlimit.Options) *harness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, l: connlimit.New(ln, opts), accepted: make(chan net.Conn, 16)}
	go func() {
		for {
			c, err := h.l.Accept()
			if err != nil {
				close(h.accepted)
				return
			}
			h.accepted <- c
		}
	}()
	t.Cleanup(func() { _ = h.l.Close() })
	return h
}

// dial connects from the loopback address from (127.0.0.x works on Linux).
func (h *harness) dial(from string) net.Conn {
	h.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", h.l.Addr().String())
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = c.Close() })
	return c
}

// next is the next connection the Listener returned.
func (h *harness) next() net.Conn {
	h.t.Helper()
	select {
	case c := <-h.accepted:
		h.t.Cleanup(func() { _ = c.Close() })
		return c
	case <-time.After(10 * time.Second):
		h.t.Fatal("no connection accepted within 10 s")
		return nil
	}
}

// closedByServer reports whether the server closed c: a read ends with EOF
// or a reset instead of waiting.
func closedByServer(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

// stillOpen checks that the server has not closed c, by a read that must
// time out.
func stillOpen(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestPerClientCapClosesTheClientsOwnIdleConnectionFirst(t *testing.T) {
	h := start(t, connlimit.Options{MaxPerClient: 3})
	a1, a2, a3 := h.dial("127.0.0.1"), h.dial("127.0.0.1"), h.dial("127.0.0.1")
	s1, s2, s3 := h.next(), h.next(), h.next()
	h.l.Stream(s1) // never closed to make room
	h.l.Idle(s2)
	h.l.Busy(s3)
	h.l.Idle(s3) // idle again later than s2: s2 has waited longest

	a4 := h.dial("127.0.0.1")
	s4 := h.next()
	if !closedByServer(t, a2) {
		t.Fatal("the client's longest-idle connection was not closed for its new one")
	}
	for _, c := range []net.Conn{a1, a3, a4} {
		if !stillOpen(t, c) {
			t.Fatal("a busy or more recent connection was closed")
		}
	}
	h.l.Busy(s3)
	h.l.Busy(s4)
	a5 := h.dial("127.0.0.1") // three busy: nothing to close, refused
	if !closedByServer(t, a5) {
		t.Fatal("a connection over the per-client cap was not refused")
	}
	b := h.dial("127.0.0.2") // another address is not affected
	h.next()
	if !stillOpen(t, b) || !stillOpen(t, a1) {
		t.Fatal("another address's connection, or a busy one, was closed")
	}
	s := h.l.Stats()
	if s.Refused[connlimit.PerClient] != 1 || s.ClosedIdle[connlimit.PerClient] != 1 || s.Open != 4 {
		t.Fatalf("stats %+v, want 1 refused and 1 idle closed per client, 4 open", s)
	}
}

func TestTotalCapClosesTheLongestIdleConnection(t *testing.T) {
	h := start(t, connlimit.Options{Max: 2})
	stream := h.dial("127.0.0.1")
	h.l.Busy(h.next())
	idle := h.dial("127.0.0.2")
	h.next() // idle from acceptance: it never sent a request
	newcomer := h.dial("127.0.0.3")
	s3 := h.next()
	if !closedByServer(t, idle) {
		t.Fatal("the idle connection was not closed to make room")
	}
	if !stillOpen(t, stream) || !stillOpen(t, newcomer) {
		t.Fatal("a busy connection or the newcomer was closed")
	}
	h.l.Busy(s3)
	refused := h.dial("127.0.0.4")
	if !closedByServer(t, refused) {
		t.Fatal("with every connection busy, the newcomer was not refused")
	}
	s := h.l.Stats()
	if s.Refused[connlimit.Total] != 1 || s.ClosedIdle[connlimit.Total] != 1 || s.Open != 2 {
		t.Fatalf("stats %+v, want 1 refused and 1 idle closed at the total cap, 2 open", s)
	}
}

func TestClosedConnectionsFreeTheirPlace(t *testing.T) {
	h := start(t, connlimit.Options{Max: 1, MaxPerClient: 1})
	c := h.dial("127.0.0.1")
	s := h.next()
	h.l.Busy(s)
	_ = s.Close()
	_ = s.Close() // twice: counted once
	_ = c.Close()
	h.dial("127.0.0.1")
	h.next()
	if st := h.l.Stats(); st.Open != 1 || st.Refused != [2]uint64{} {
		t.Fatalf("stats %+v, want 1 open and nothing refused", st)
	}
}

func TestExemptPeersAreHeldOnlyToTheTotal(t *testing.T) {
	h := start(t, connlimit.Options{Max: 3, MaxPerClient: 1, Exempt: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	for range 3 {
		h.dial("127.0.0.1")
		h.l.Busy(h.next())
	}
	if c := h.dial("127.0.0.1"); !closedByServer(t, c) {
		t.Fatal("an exempt peer went past the total cap")
	}
	if st := h.l.Stats(); st.Open != 3 || st.Refused[connlimit.Total] != 1 {
		t.Fatalf("stats %+v, want 3 open and 1 refused at the total cap", st)
	}
}

// An exempt peer carries many clients' connections: however many it
// holds, another address's idle connection is closed for its new one.
func TestExemptPeerGetsRoomFromAnotherAddressesIdleConnection(t *testing.T) {
	h := start(t, connlimit.Options{Max: 3, Exempt: []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")}})
	h.busy("127.0.0.9", 2)
	idle := h.dial("127.0.0.2")
	h.next()
	proxied := h.dial("127.0.0.9")
	h.next()
	if !closedByServer(t, idle) {
		t.Fatal("the idle connection was not closed for the exempt peer's new one")
	}
	if !stillOpen(t, proxied) {
		t.Fatal("the exempt peer's new connection was refused")
	}
}

// The HTTP server reports a TLS connection's state with the *tls.Conn:
// Busy must reach the connection underneath.
func TestBusySeesThroughTLS(t *testing.T) {
	h := start(t, connlimit.Options{MaxPerClient: 1})
	h.dial("127.0.0.1")
	h.l.Busy(tls.Server(h.next(), &tls.Config{}))
	if c := h.dial("127.0.0.1"); !closedByServer(t, c) {
		t.Fatal("the busy TLS connection was closed to make room")
	}
}

func TestDefaultsLeaveHeadroom(t *testing.T) {
	cases := []struct {
		nofile                uint64
		max, perIP, listeners int
		wantMax, want         int
	}{
		{nofile: 20000, wantMax: 18000, want: 9000},
		{nofile: 512, wantMax: 448, want: 224}, // at least 64 kept
		{nofile: 100, wantMax: 50, want: 25},   // at most half kept
		{nofile: 1 << 62, wantMax: 1932735283, want: 966367641},
		{nofile: 20000, max: 100, wantMax: 100, want: 50},
		{nofile: 20000, perIP: 7, wantMax: 18000, want: 7},
		// One proxy still carries every listener admitted (MAX_SUBSCRIBERS
		// 10,000) and its POSTs, as before the caps; never more than Max.
		{nofile: 20000, listeners: 10000, wantMax: 18000, want: 11000},
		{nofile: 1 << 20, listeners: 10000, wantMax: 943719, want: 471859},
		{nofile: 4096, listeners: 10000, wantMax: 3687, want: 3687},
		{nofile: 512, listeners: 100, wantMax: 448, want: 224},
		{nofile: 20000, perIP: 7, listeners: 10000, wantMax: 18000, want: 7},
	}
	for _, c := range cases {
		o := connlimit.Defaults(c.nofile, c.max, c.perIP, c.listeners)
		if o.Max != c.wantMax || o.MaxPerClient != c.want {
			t.Errorf("Defaults(%d, %d, %d, %d) = %d, %d; want %d, %d", c.nofile, c.max, c.perIP, c.listeners, o.Max, o.MaxPerClient, c.wantMax, c.want)
		}
	}
}

func TestListenersLeaveRoomForOthers(t *testing.T) {
	cases := []struct{ max, listeners, want int }{
		{max: 18000, listeners: 10000, want: 10000},
		{max: 448, listeners: 10000, want: 403},
		{max: 448, listeners: 448, want: 403},
		{max: 448, listeners: 403, want: 403},
		{max: 448, listeners: 100, want: 100},
		{max: 1, listeners: 10, want: 1},
		{max: 0, listeners: 10000, want: 10000},
	}
	for _, c := range cases {
		if got := (connlimit.Options{Max: c.max}).Listeners(c.listeners); got != c.want {
			t.Errorf("Max %d, %d listeners: %d, want %d", c.max, c.listeners, got, c.want)
		}
	}
}

// A second port added to a Listener shares its caps: one budget of
// descriptors, whatever port the connections come through.
func TestAddedPortSharesTheCaps(t *testing.T) {
	h := start(t, connlimit.Options{Max: 2, MaxPerClient: 2})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other := h.l.Add(ln, "grpc")
	defer other.Close()
	stream := h.dial("127.0.0.1")
	h.l.Busy(h.next())
	dial := func() net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}
		c, err := d.Dial("tcp", other.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	accept := func() net.Conn {
		c, err := other.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	idle := dial()
	accept()
	newcomer := dial()
	s := accept() // the idle one on the other port made room
	if !closedByServer(t, idle) {
		t.Fatal("the idle connection on the added port was not closed to make room")
	}
	h.l.Busy(s) // marked through the Listener, like its own
	refused := dial()
	go func() { _, _ = other.Accept() }() // returns nothing: the newcomer is refused inside
	if !closedByServer(t, refused) {
		t.Fatal("with both ports' connections busy, the newcomer was not refused")
	}
	if !stillOpen(t, stream) || !stillOpen(t, newcomer) {
		t.Fatal("a busy connection was closed")
	}
	if st := h.l.Stats(); st.Open != 2 || st.ClosedIdle[connlimit.PerClient] != 1 || st.Refused[connlimit.PerClient] != 1 {
		t.Fatalf("stats %+v, want 2 open, 1 idle closed and 1 refused at the per-client cap", st)
	}
}

// busy accepts n connections from ip and marks them as serving a request,
// in order: the first returned has been busy longest.
func (h *harness) busy(ip string, n int) (clients []net.Conn) {
	h.t.Helper()
	for range n {
		clients = append(clients, h.dial(ip))
		h.l.Busy(h.next())
	}
	return clients
}

// A few addresses trickling request bodies fill the total cap with busy
// connections: a newcomer from another address still gets in, by the
// close of the longest-busy request of the address with the most in
// flight, over its share. Addresses over their share only trade among
// themselves.
func TestTotalCapClosesTheBusiestAddressesLongestRequest(t *testing.T) {
	h := start(t, connlimit.Options{Max: 6})
	two := h.busy("127.0.0.2", 3)
	three := h.busy("127.0.0.3", 2)
	h.dial("127.0.0.1")
	release := h.l.Stream(h.next())
	defer release()

	h.dial("127.0.0.4")
	h.l.Busy(h.next())
	if !closedByServer(t, two[0]) {
		t.Fatal("the longest request of the address with the most in flight was not closed")
	}
	for _, c := range append(two[1:], three...) {
		if !stillOpen(t, c) {
			t.Fatal("another request in flight was closed")
		}
	}
	// .2 and .3 now hold 2 each, over their share (6 over 4 addresses):
	// a new connection of theirs is refused, not let in at the other's
	// expense; one from a fifth address gets in.
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		if c := h.dial(ip); !closedByServer(t, c) {
			t.Fatalf("a new connection from %s, over its share, was admitted", ip)
		}
	}
	h.dial("127.0.0.5")
	h.next()
	st := h.l.Stats()
	if st.ClosedBusy != 2 || st.Refused[connlimit.Total] != 2 || st.Open != 6 {
		t.Fatalf("stats %+v, want 2 busy closed, 2 refused, 6 open", st)
	}
}

// Addresses holding no more than the newcomer's would keep their
// requests: the newcomer is refused.
func TestBusyConnectionsWithinTheirShareAreKept(t *testing.T) {
	h := start(t, connlimit.Options{Max: 4})
	var held []net.Conn
	for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		held = append(held, h.busy(ip, 1)...)
	}
	if c := h.dial("127.0.0.6"); !closedByServer(t, c) {
		t.Fatal("the newcomer was admitted though every address held one connection")
	}
	for _, c := range held {
		if !stillOpen(t, c) {
			t.Fatal("a request in flight of an address within its share was closed")
		}
	}
	if st := h.l.Stats(); st.ClosedBusy != 0 || st.Refused[connlimit.Total] != 1 {
		t.Fatalf("stats %+v, want nothing closed, 1 refused", st)
	}
}

// Streams and an exempt proxy's requests are never closed for room, however
// many the address holds; a connection whose stream has ended is a request
// again.
func TestStreamsAndExemptPeersAreNeverClosedForRoom(t *testing.T) {
	h := start(t, connlimit.Options{Max: 4, Exempt: []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")}})
	h.busy("127.0.0.9", 1)
	var releases []func()
	var streams []net.Conn
	for range 3 {
		streams = append(streams, h.dial("127.0.0.2"))
		s := h.next()
		h.l.Busy(s) // the request, then its stream
		releases = append(releases, h.l.Stream(s))
	}
	if c := h.dial("127.0.0.3"); !closedByServer(t, c) {
		t.Fatal("the newcomer was admitted though only streams and an exempt peer were held")
	}
	for _, c := range streams {
		if !stillOpen(t, c) {
			t.Fatal("a stream was closed for room")
		}
	}
	releases[1]()
	releases[1]() // twice: counted once
	h.dial("127.0.0.3")
	h.next()
	if !closedByServer(t, streams[1]) {
		t.Fatal("the connection whose stream ended was not closed for room")
	}
	if !stillOpen(t, streams[0]) || !stillOpen(t, streams[2]) {
		t.Fatal("a stream was closed for room")
	}
	if st := h.l.Stats(); st.ClosedBusy != 1 || st.Refused[connlimit.Total] != 1 {
		t.Fatalf("stats %+v, want 1 busy closed, 1 refused", st)
	}
}

// The HTTP server hands each connection (here under TLS) to ConnContext;
// a handler marks its own as a stream through the request's context.
func TestMarkStreamThroughTheConnectionsContext(t *testing.T) {
	h := start(t, connlimit.Options{Max: 2})
	stream := h.dial("127.0.0.2")
	s := tls.Server(h.next(), &tls.Config{})
	h.l.Busy(s)
	release := connlimit.MarkStream(h.l.ConnContext(context.Background(), s))
	defer release()
	request := h.busy("127.0.0.2", 1)[0]
	newcomer := h.dial("127.0.0.3")
	h.next()
	if !closedByServer(t, request) {
		t.Fatal("the request in flight was not closed for room")
	}
	if !stillOpen(t, stream) || !stillOpen(t, newcomer) {
		t.Fatal("the stream, or the newcomer, was closed for room")
	}
	connlimit.MarkStream(context.Background())() // no connection recorded: nothing happens
}

// The warning names the port the refused connection came through.
func TestWarningNamesThePort(t *testing.T) {
	logs := make(chan []byte, 1)
	h := start(t, connlimit.Options{Max: 1, Name: "public", Logger: zerolog.New(lines(logs))})
	h.busy("127.0.0.1", 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other := h.l.Add(ln, "grpc")
	defer other.Close()
	go func() { _, _ = other.Accept() }()
	c, err := net.Dial("tcp", other.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !closedByServer(t, c) {
		t.Fatal("not refused")
	}
	select {
	case line := <-logs:
		if !bytes.Contains(line, []byte(`"listener":"grpc"`)) {
			t.Fatalf("log %s does not name the gRPC port", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no warning logged")
	}
}

// lines is an io.Writer handing each log line to a channel.
type lines chan []byte

func (l lines) Write(p []byte) (int, error) {
	l <- bytes.Clone(p)
	return len(p), nil
}

// One address holds most of Max in streams, another the rest in requests
// in flight (POST bodies trickled), few but all of what streams leave: a
// newcomer from a third address gets in by the close of the second's
// longest request, since the share is measured on what streams leave.
// The streams are kept, and the newcomer's connection, idle until its
// request arrives, is not closed for the trickling address's next one.
func TestShareIsWhatStreamsLeave(t *testing.T) {
	h := start(t, connlimit.Options{Max: 10})
	var streams []net.Conn
	for range 7 {
		streams = append(streams, h.dial("127.0.0.2"))
		release := h.l.Stream(h.next())
		t.Cleanup(release)
	}
	trickled := h.busy("127.0.0.3", 3)

	newcomer := h.dial("127.0.0.4")
	h.next()
	if !closedByServer(t, trickled[0]) {
		t.Fatal("the longest request of the address holding every connection streams leave was not closed")
	}
	for _, ip := range []string{"127.0.0.3", "127.0.0.2"} {
		if c := h.dial(ip); !closedByServer(t, c) {
			t.Fatalf("a new connection from %s was admitted at the newcomer's expense", ip)
		}
	}
	for _, c := range append(append(streams, trickled[1:]...), newcomer) {
		if !stillOpen(t, c) {
			t.Fatal("a stream, a request within its share or the newcomer was closed")
		}
	}
	if st := h.l.Stats(); st.ClosedBusy != 1 || st.ClosedIdle[connlimit.Total] != 0 || st.Refused[connlimit.Total] != 2 || st.Open != 10 {
		t.Fatalf("stats %+v, want 1 busy closed, none idle, 2 refused, 10 open", st)
	}
}

// Three addresses churn idle connections at the total cap while a client
// that holds one connection has not sent its request yet: the connections
// closed for room are the churning addresses' own, those holding the
// most first, and the lone client's is kept however long it waits.
func TestIdleFloodClosesTheAddressHoldingTheMost(t *testing.T) {
	h := start(t, connlimit.Options{Max: 7})
	slow := h.dial("127.0.0.9") // idle longest: it has not sent its request
	h.next()
	var two []net.Conn
	for range 3 {
		two = append(two, h.dial("127.0.0.2"))
		h.next()
	}
	for range 3 {
		h.dial("127.0.0.3")
		h.next()
	}
	h.dial("127.0.0.4")
	h.next()
	if !closedByServer(t, two[0]) {
		t.Fatal("the longest-idle connection of the address holding the most was not closed")
	}
	for range 20 {
		for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
			h.dial(ip)
			h.next()
		}
	}
	if !stillOpen(t, slow) {
		t.Fatal("the lone connection of a client slow to send its request was closed for a flood of idle ones")
	}
	if st := h.l.Stats(); st.ClosedIdle[connlimit.Total] != 61 || st.Refused[connlimit.Total] != 0 || st.Open != 7 {
		t.Fatalf("stats %+v, want 61 idle closed, none refused, 7 open", st)
	}
}

// With Stuck, a port full of requests in flight, one per address, makes
// room by closing the one in flight longest, once that is longer than
// Stuck: a client that does not read its answer, from each of many
// addresses, cannot hold every connection. Streams are never closed;
// without Stuck, or before it, the newcomer is refused.
func TestStuckRequestClosedForRoom(t *testing.T) {
	for _, c := range []struct {
		stuck     time.Duration
		wantRoom  bool
		situation string
	}{
		{50 * time.Millisecond, true, "stuck longer than Stuck"},
		{time.Hour, false, "in flight for less than Stuck"},
		{0, false, "without Stuck"},
	} {
		t.Run(c.situation, func(t *testing.T) {
			h := start(t, connlimit.Options{Max: 3, Stuck: c.stuck})
			a := h.dial("127.0.0.2")
			h.l.Busy(h.next())
			time.Sleep(10 * time.Millisecond)
			b := h.dial("127.0.0.3")
			h.l.Busy(h.next())
			s := h.dial("127.0.0.4")
			h.l.Stream(h.next())
			time.Sleep(100 * time.Millisecond)

			n := h.dial("127.0.0.5")
			if !c.wantRoom {
				if !closedByServer(t, n) {
					t.Fatal("the newcomer was not refused")
				}
				return
			}
			h.next()
			if !closedByServer(t, a) {
				t.Fatal("the request in flight longest was not closed for room")
			}
			for _, open := range []net.Conn{b, s, n} {
				if !stillOpen(t, open) {
					t.Fatal("a later request, the stream or the newcomer was closed")
				}
			}
			if st := h.l.Stats(); st.ClosedBusy != 1 {
				t.Fatalf("stats %+v, want 1 request in flight closed", st)
			}
		})
	}
}
