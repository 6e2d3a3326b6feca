package server_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

// rawH2 is a hand-driven cleartext HTTP/2 connection (prior knowledge): the
// test writes whatever frames an attacker would.
type rawH2 struct {
	conn net.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
	mu   sync.Mutex // serialises writes
}

// dialRawH2 connects to srv, sends the preface and settings, and returns
// once the server's SETTINGS have been read and acknowledged.
func dialRawH2(t *testing.T, conn net.Conn, settings ...http2.Setting) *rawH2 {
	t.Helper()
	c := &rawH2{conn: conn, fr: http2.NewFramer(conn, conn)}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = 1 << 20
	c.enc = hpack.NewEncoder(&c.hbuf)
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's settings: %v", err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			if err := c.fr.WriteSettingsAck(); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Time{})
			return c
		}
	}
}

// headers encodes a request's header block: the pseudo-headers, then extra
// in order.
func (c *rawH2) headers(method, path string, extra ...hpack.HeaderField) []byte {
	c.hbuf.Reset()
	for _, f := range append([]hpack.HeaderField{
		{Name: ":method", Value: method}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "dispatcher"}, {Name: ":path", Value: path},
	}, extra...) {
		_ = c.enc.WriteField(f)
	}
	return bytes.Clone(c.hbuf.Bytes())
}

// request opens stream id with block, split into CONTINUATION frames of at
// most 16 KiB.
func (c *rawH2) request(id uint32, block []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	const max = 16 << 10
	first := block[:min(len(block), max)]
	rest := block[len(first):]
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: true, EndHeaders: len(rest) == 0}); err != nil {
		return err
	}
	for len(rest) > 0 {
		n := min(len(rest), max)
		if err := c.fr.WriteContinuation(id, n == len(rest), rest[:n]); err != nil {
			return err
		}
		rest = rest[n:]
	}
	return nil
}

// answers reads frames until the connection ends or stop says so, and
// counts the streams answered with each status, those reset, and the
// GOAWAY code if any.
type answers struct {
	status map[string]int
	resets map[http2.ErrCode]int
	goAway *http2.ErrCode
	err    error
}

func (c *rawH2) readAnswers(stop func(answers) bool) answers {
	a := answers{status: map[string]int{}, resets: map[http2.ErrCode]int{}}
	for !stop(a) {
		f, err := c.fr.ReadFrame()
		if err != nil {
			a.err = err
			return a
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			a.status[f.PseudoValue("status")]++
		case *http2.RSTStreamFrame:
			a.resets[f.ErrCode]++
		case *http2.GoAwayFrame:
			code := f.ErrCode
			a.goAway = &code
		case *http2.PingFrame:
			if !f.IsAck() {
				c.mu.Lock()
				_ = c.fr.WritePing(true, f.Data)
				c.mu.Unlock()
			}
		}
	}
	return a
}

// stillServes checks that a client on another connection is served while
// (or after) one connection misbehaves: it subscribes and receives an event.
func stillServes(t *testing.T, srv *ssetest.Server, marker string) {
	t.Helper()
	s := ssetest.Subscribe(t, ssetest.H2CClient(t, 0), srv.URL+"/events", nil)
	ev := fmt.Sprintf(`{"still":%q}`, marker)
	srv.Publish(t, []byte(ev))
	if got := s.NextData(t, within(t, 30*time.Second)); got != ev {
		t.Fatalf("%s: another client got %q, want %q", marker, got, ev)
	}
	s.Close()
}

// listenersBack waits until the hub holds want listeners: nothing the
// attack opened is left behind.
func listenersBack(t *testing.T, srv *ssetest.Server, want int64, what string) {
	t.Helper()
	ssetest.Eventually(t, 30*time.Second, what, func() (bool, string) {
		n := srv.Hub.Stats().Listeners
		return n == want, fmt.Sprintf("%d listeners, want %d", n, want)
	})
}

// peakListeners samples the hub's listener count until stop is closed and
// returns the highest seen.
func peakListeners(srv *ssetest.Server, stop <-chan struct{}) <-chan int64 {
	out := make(chan int64, 1)
	go func() {
		var peak int64
		for {
			peak = max(peak, srv.Hub.Stats().Listeners)
			select {
			case <-stop:
				out <- max(peak, srv.Hub.Stats().Listeners)
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return out
}

// Rapid reset (CVE-2023-44487): a client opens streams and cancels each at
// once, in a loop. The streams' handlers never run beyond
// MaxConcurrentStreams at a time on the connection; the server stays
// available to others; nothing is left behind.
func TestHTTP2RapidResetFlood(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	c := dialRawH2(t, srv.Dial(t))
	stop := make(chan struct{})
	peak := peakListeners(srv, stop)
	read := make(chan answers, 1)
	go func() { read <- c.readAnswers(func(answers) bool { return false }) }()

	const floods = 20000
	sent := 0
	var werr error
	for id := uint32(1); sent < floods; id += 2 {
		if werr = c.request(id, c.headers("GET", "/events")); werr != nil {
			break
		}
		c.mu.Lock()
		werr = c.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		c.mu.Unlock()
		if werr != nil {
			break
		}
		sent++
	}
	stillServes(t, srv, "during the flood")
	_ = c.conn.Close()
	a := <-read
	close(stop)
	if p := <-peak; p > server.MaxConcurrentStreams+1 { // +1: stillServes' own listener
		t.Errorf("%d listeners at once from one connection's flood, want at most %d", p, server.MaxConcurrentStreams)
	}
	code := "none"
	if a.goAway != nil {
		code = a.goAway.String()
	}
	t.Logf("sent %d open+reset pairs (write error: %v); GOAWAY %s; %d answered", sent, werr, code, a.status["200"])
	listenersBack(t, srv, 0, "every flooded stream gone")
	stillServes(t, srv, "after the flood")
}

// Thousands of streams on one connection: at most MaxConcurrentStreams are
// served, the others refused at once; each served one is a listener like
// any other, and all leave with the connection.
func TestHTTP2ThousandsOfStreamsOnOneConnection(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	c := dialRawH2(t, srv.Dial(t))
	const streams = 2000
	for i := range streams {
		if err := c.request(uint32(2*i+1), c.headers("GET", "/events")); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	a := c.readAnswers(func(a answers) bool {
		refused := 0
		for _, n := range a.resets {
			refused += n
		}
		return a.status["200"]+refused >= streams || a.goAway != nil
	})
	refused := 0
	for _, n := range a.resets {
		refused += n
	}
	if a.status["200"] != server.MaxConcurrentStreams || refused != streams-server.MaxConcurrentStreams || a.goAway != nil {
		t.Errorf("%d streams served, %d reset (%v), GOAWAY %v (read error %v); want %d served and the rest refused",
			a.status["200"], refused, a.resets, a.goAway, a.err, server.MaxConcurrentStreams)
	}
	if n := srv.Hub.Stats().Listeners; n != server.MaxConcurrentStreams {
		t.Errorf("%d listeners, want %d", n, server.MaxConcurrentStreams)
	}
	stillServes(t, srv, "beside the crowded connection")
	_ = c.conn.Close()
	listenersBack(t, srv, 0, "the crowded connection's streams gone")
}

// Huge headers: one header of 1 MiB over CONTINUATION frames, and an HPACK
// bomb (a 3 KiB header indexed once, then referenced by one byte 300 times:
// about 900 KiB decoded from under 4 KiB sent). Both are refused without a
// listener, and the server goes on serving.
func TestHTTP2HugeHeadersRefused(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	big := strings.Repeat("a", 3<<10)
	for _, tc := range []struct {
		name  string
		extra []hpack.HeaderField
	}{
		{"one huge header", []hpack.HeaderField{{Name: "x-huge", Value: strings.Repeat("h", 1<<20)}}},
		{"HPACK bomb", func() []hpack.HeaderField {
			f := make([]hpack.HeaderField, 300) // each small enough for the 4 KiB table
			for i := range f {
				f[i] = hpack.HeaderField{Name: "x-bomb", Value: big}
			}
			return f
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The previous case's check listener may still be leaving.
			listenersBack(t, srv, 0, "the listeners of the case before gone")
			c := dialRawH2(t, srv.Dial(t))
			block := c.headers("GET", "/events", tc.extra...)
			if tc.name == "HPACK bomb" && len(block) > 6<<10 {
				t.Fatalf("the bomb's block is %d bytes: not a bomb", len(block))
			}
			werr := c.request(1, block)
			a := c.readAnswers(func(a answers) bool { return len(a.status) > 0 || len(a.resets) > 0 || a.goAway != nil })
			switch {
			case a.status["431"] == 1:
			case a.goAway != nil || len(a.resets) > 0 || a.err != nil:
			default:
				t.Errorf("answers %+v (write error %v): want 431, a reset or the connection closed", a, werr)
			}
			if a.status["200"] > 0 {
				t.Errorf("the request was served: %+v", a)
			}
			t.Logf("write error %v; answers: status %v, resets %v, GOAWAY %v, read error %v", werr, a.status, a.resets, a.goAway, a.err)
			if n := srv.Hub.Stats().Listeners; n != 0 {
				t.Errorf("%d listeners, want none", n)
			}
			stillServes(t, srv, tc.name)
		})
	}
}

// A client that reads nothing on any stream: it grants the server huge
// flow-control windows, opens streams, and never reads its socket. Every
// write of that connection blocks, the streams' resets included; once its
// socket has taken nothing for WRITE_TIMEOUT the connection is closed with
// all its streams. None of it holds a listener slot for long, and a
// listener on another connection receives every event.
func TestHTTP2ClientThatNeverReads(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{BufferBytes: 1 << 30, WriteTimeout: 500 * time.Millisecond},
		server.Options{MaxBodyBytes: 1 << 20, WriteTimeout: 500 * time.Millisecond})
	healthy := ssetest.Subscribe(t, ssetest.H2CClient(t, 0), srv.URL+"/events", nil)
	c := dialRawH2(t, dialSmallReceiveBuffer(t, srv.Addr), http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	c.mu.Lock()
	err := c.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	c.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	const streams = 50
	for i := range streams {
		if err := c.request(uint32(2*i+1), c.headers("GET", "/events")); err != nil {
			t.Fatal(err)
		}
	}
	listenersBack(t, srv, streams+1, "the silent client's streams subscribed")
	// From now on nothing is read from c.

	ctx := within(t, time.Minute)
	wait := collect(ctx, healthy)
	accepted := map[tag]string{}
	pad := strings.Repeat("p", 16<<10)
	var published atomic.Int64
	for seq := 0; srv.Hub.Stats().Listeners > 1; seq++ {
		if seq > 5000 {
			t.Fatalf("the silent client still holds %d streams after %d events of 16 KiB", srv.Hub.Stats().Listeners-1, seq)
		}
		body := fmt.Sprintf(`{"test_pub":0,"test_seq":%d,"pad":%q}`, seq, pad)
		srv.Publish(t, []byte(body))
		accepted[tag{Pub: 0, Seq: seq}] = body
		published.Add(1)
		time.Sleep(5 * time.Millisecond)
	}
	publishSentinel(t, srv, []byte(`{}`))
	got, err := wait()
	if err != nil {
		t.Fatalf("healthy listener: %v", err)
	}
	checkDelivery(t, "healthy listener", got, accepted)
	// Its connection is either closed (its socket took nothing for
	// WRITE_TIMEOUT) or idle without a stream, until IdleTimeout: logged.
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	nread, rerr := io.Copy(io.Discard, c.conn)
	t.Logf("the silent connection, read at last: %d bytes, then %v", nread, rerr)
	t.Logf("%d events published until its %d streams were gone", published.Load(), streams)
}
