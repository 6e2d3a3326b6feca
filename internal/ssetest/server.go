// Package ssetest runs the dispatcher's HTTP service on a loopback port and
// talks to it the way real clients do: plain HTTP requests, raw TCP when a
// test needs a misbehaving client, and an SSE reader that parses the bytes
// the server actually sent.
package ssetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/connlimit"
	"event-dispatcher/pkg/fixtures"
	"event-dispatcher/pkg/server"
)

// Server is the dispatcher listening on 127.0.0.1, with its hub. The test's
// cleanup closes the hub (which ends every stream) and then the listener.
type Server struct {
	URL    string // base URL, "http://127.0.0.1:port"
	Addr   string // "127.0.0.1:port", for raw TCP clients
	Hub    *broadcast.Hub
	Server *server.Server
	HTTP   *httptest.Server
	Client *http.Client // keeps connections alive across short requests
	Admin  string       // base URL of the admin handler, on a port of its own
}

// Start serves server.New(srv) with a hub built by broadcast.New(hub). Zero
// fields of either get the service's defaults (see broadcast.Options; 64 KiB
// bodies and a 10 s body timeout for the server), except MaxLag: a minute;
// zero Heartbeat and MaxStreamDuration mean off. A zero Logger discards
// everything at info level, as in production. The http.Server is the one
// server.HTTPServer configures, so its header and idle limits apply.
func Start(t testing.TB, hub broadcast.Options, srv server.Options) *Server {
	t.Helper()
	return start(t, hub, srv, nil)
}

// StartCapped is Start behind a connlimit.Listener with caps, told of its
// connections' states and streams as the service's public port is.
func StartCapped(t testing.TB, hub broadcast.Options, srv server.Options, caps connlimit.Options) (*Server, *connlimit.Listener) {
	t.Helper()
	var lim *connlimit.Listener
	s := start(t, hub, srv, func(ln net.Listener, hs *http.Server) net.Listener {
		lim = connlimit.New(ln, caps)
		hs.ConnState, hs.ConnContext = server.TrackConns(lim), lim.ConnContext
		return lim
	})
	return s, lim
}

// start is Start with the listener wrapped by wrap, when not nil; wrap may
// also set the http.Server's hooks.
func start(t testing.TB, hub broadcast.Options, srv server.Options, wrap func(net.Listener, *http.Server) net.Listener) *Server {
	t.Helper()
	quiet := zerolog.New(io.Discard).Level(zerolog.InfoLevel)
	if reflect.ValueOf(hub.Logger).IsZero() {
		hub.Logger = quiet
	}
	if reflect.ValueOf(srv.Logger).IsZero() {
		srv.Logger = quiet
	}
	srv.MaxBodyBytes = orDefault(srv.MaxBodyBytes, 64<<10)
	srv.BodyReadTimeout = orDefault(srv.BodyReadTimeout, 10*time.Second)

	if hub.MaxLag == 0 {
		// A starved test machine must not make the default second of
		// allowed fan-out lag refuse events in tests about something else;
		// tests of admission set MaxLag themselves.
		hub.MaxLag = time.Minute
	}
	h, err := broadcast.New(hub)
	if err != nil {
		t.Fatal(err)
	}
	srv.Hub = h
	s := server.New(srv)
	ts := httptest.NewUnstartedServer(s)
	ts.Config = s.HTTPServer()
	if wrap != nil {
		ts.Listener = wrap(ts.Listener, ts.Config)
	}
	ts.Start()
	admin := httptest.NewServer(s.Admin())
	t.Cleanup(admin.Close)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	out := &Server{
		URL: ts.URL, Addr: ts.Listener.Addr().String(),
		Hub: h, Server: s, HTTP: ts, Client: &http.Client{Transport: tr}, Admin: admin.URL,
	}
	// Cleanups run last-in first-out: the hub closes first, so that no
	// stream is left for ts.Close to wait on.
	t.Cleanup(ts.Close)
	t.Cleanup(tr.CloseIdleConnections)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Errorf("closing the hub: %v", err)
		}
	})
	return out
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Response is a complete HTTP answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends one request with s.Client and reads the whole answer. A nil
// header sends none.
func (s *Server) Do(ctx context.Context, method, path string, header http.Header, body []byte) (Response, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, r)
	if err != nil {
		return Response{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, err
}

// Post sends body to path with the given Content-Type ("" sends none).
func (s *Server) Post(ctx context.Context, path, contentType string, body []byte) (Response, error) {
	var h http.Header
	if contentType != "" {
		h = http.Header{"Content-Type": {contentType}}
	}
	return s.Do(ctx, http.MethodPost, path, h, body)
}

// Publish posts body to /api/events and requires 204.
func (s *Server) Publish(t testing.TB, body []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := s.Post(ctx, "/api/events", "application/json", body)
	if err != nil {
		t.Fatalf("POST /api/events: %v", err)
	}
	if r.Status != http.StatusNoContent {
		t.Fatalf("POST /api/events: status %d, body %s", r.Status, r.Body)
	}
}

// Health is the body of /health.
type Health struct {
	Status           string  `json:"status"`
	Listeners        int64   `json:"listeners"`
	EventsAccepted   uint64  `json:"events_accepted"`
	EventsBusy       uint64  `json:"events_refused_busy"`
	ListenersDropped uint64  `json:"listeners_dropped"`
	FanoutLagEvents  int64   `json:"fanout_lag_events"`
	EventsRejected   uint64  `json:"events_rejected"`
	OriginsRefused   uint64  `json:"origins_refused"`
	UptimeSeconds    float64 `json:"uptime_seconds"`
	Goroutines       int     `json:"goroutines"`
}

// Health fetches /health and returns its body and status code.
func (s *Server) Health(t testing.TB) (Health, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := s.Do(ctx, http.MethodGet, "/health", nil, nil)
	if err != nil {
		t.Fatalf("GET /health: %v", err)
	}
	var h Health
	if err := json.Unmarshal(r.Body, &h); err != nil {
		t.Fatalf("GET /health: %v in %q", err, r.Body)
	}
	return h, r.Status
}

// Dial opens a raw TCP connection to the server, closed at cleanup.
func (s *Server) Dial(t testing.TB) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", s.Addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Eventually polls cond every 10 ms until it holds, and fails the test
// when it still does not after timeout. cond returns a description of the
// state it saw, for the failure message. The timeout only guards against a
// hang; nothing is measured.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %s; last seen: %s", what, timeout, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Fixture returns a real player message (see package fixtures).
func Fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := fixtures.Get(name)
	if err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	return b
}

// WithMembers returns a copy of the JSON object obj with members (e.g.
// `"seq":1,"pub":2`) inserted as its first members, keeping the rest of
// obj's bytes, whitespace included, as they were.
func WithMembers(obj []byte, members string) []byte {
	i := bytes.IndexByte(obj, '{')
	if i < 0 {
		panic(fmt.Sprintf("WithMembers: not an object: %.40q", obj))
	}
	rest := obj[i+1:]
	sep := ","
	if len(bytes.TrimSpace(rest)) > 0 && bytes.TrimSpace(rest)[0] == '}' {
		sep = ""
	}
	out := make([]byte, 0, len(obj)+len(members)+1)
	out = append(out, obj[:i+1]...)
	out = append(out, members...)
	out = append(out, sep...)
	return append(out, rest...)
}
