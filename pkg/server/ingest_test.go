package server_test

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/clientip"
	"event-dispatcher/pkg/event"
	"event-dispatcher/pkg/server"
)

func TestIngestDeliversOneCompactDataLineByteForByte(t *testing.T) {
	t.Parallel()
	type tc struct {
		name        string
		path        string
		contentType string
		body        string
		want        string
	}
	cases := []tc{
		{"duplicate keys kept", "/api/events", "application/json", `{"a": 1, "a": 2}`, `{"a":1,"a":2}`},
		{"key order kept", "/api/events", "application/json", "{\n  \"z\": 1,\n  \"a\": 2,\n  \"m\": {\"y\": 1, \"b\": 2}\n}", `{"z":1,"a":2,"m":{"y":1,"b":2}}`},
		{"number literals kept", "/api/events", "application/json",
			`{ "f": 1.0, "e": 1e3, "E": 2.50E-3, "neg0": -0, "big": 123456789012345678901234567890, "i64": 9007199254740993 }`,
			`{"f":1.0,"e":1e3,"E":2.50E-3,"neg0":-0,"big":123456789012345678901234567890,"i64":9007199254740993}`},
		{"unicode and escapes kept", "/api/events", "application/json",
			`{ "s": "é \u00e9 \n \" \\ \/ 😀 \ud83d\ude00 <b>&amp;</b> \u2028" , "k\u00e9y" : "x" }`,
			`{"s":"é \u00e9 \n \" \\ \/ 😀 \ud83d\ude00 <b>&amp;</b> \u2028","k\u00e9y":"x"}`},
		{"raw line separators kept", "/api/events", "application/json", "{\"s\": \"a\u2028b\u2029c\"}", "{\"s\":\"a\u2028b\u2029c\"}"},
		{"CRLF and tabs removed", "/api/events", "application/json", "{\r\n\t\"a\" :\t[ 1 ,\r\n 2 ],\r\n\t\"b\": { }\r\n}\r\n", `{"a":[1,2],"b":{}}`},
		{"empty object", "/api/events", "application/json", ` {} `, `{}`},
		{"sendBeacon text/plain on /metrics", "/metrics", "text/plain;charset=UTF-8", `{"k": "v"}`, `{"k":"v"}`},
		{"android content type", "/api/events", "application/json; charset=utf-8", `{"k": "v"}`, `{"k":"v"}`},
		{"no content type", "/api/events", "", `{"k": "v"}`, `{"k":"v"}`},
		{"odd content type", "/metrics", "application/x-www-form-urlencoded", `{"k": "v"}`, `{"k":"v"}`},
	}
	for _, name := range validFixtures() {
		b := ssetest.Fixture(t, name)
		cases = append(cases, tc{"fixture " + name, "/api/events", "application/json", string(b), compact(t, b)})
	}

	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	s := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := within(t, 10*time.Second)
			r, err := srv.Post(ctx, c.path, c.contentType, []byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != http.StatusNoContent || len(r.Body) != 0 {
				t.Fatalf("status %d body %q, want 204 and no body", r.Status, r.Body)
			}
			e, err := s.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if want := "data: " + c.want + "\n\n"; e.Raw != want {
				t.Errorf("listener got\n%q\nwant\n%q", e.Raw, want)
			}
		})
	}
}

// badInput is a request the ingest paths must refuse.
type badInput struct {
	name    string
	body    []byte
	chunked bool // send without Content-Length
	status  int
	msg     string
}

func TestIngestRefusesBadInputPrecisely(t *testing.T) {
	t.Parallel()
	const maxBody = 1024
	const readTimeout = time.Second
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{MaxBodyBytes: maxBody, BodyReadTimeout: readTimeout})
	listener := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)

	tooLarge := "body exceeds " + strconv.Itoa(maxBody) + " bytes"
	big := []byte(`{"k":"s3cr3t` + strings.Repeat("x", maxBody) + `"}`)
	cases := []badInput{
		{"empty body", nil, false, 400, event.ErrEmpty.Error()},
		{"whitespace only", []byte(" \r\n\t "), false, 400, event.ErrEmpty.Error()},
		{"array", []byte(`[{"k":"s3cr3t"}]`), false, 400, event.ErrNotObject.Error()},
		{"number", []byte(`42`), false, 400, event.ErrNotObject.Error()},
		{"true", []byte(`true`), false, 400, event.ErrNotObject.Error()},
		{"null", []byte(`null`), false, 400, event.ErrNotObject.Error()},
		{"string", []byte(`"s3cr3t"`), false, 400, event.ErrNotObject.Error()},
		{"bare word", []byte(`s3cr3t`), false, 400, event.ErrSyntax.Error()},
		{"trailing garbage", []byte(`{"k":"s3cr3t"}x`), false, 400, event.ErrSyntax.Error()},
		{"two objects", []byte(`{"k":"s3cr3t"}{}`), false, 400, event.ErrSyntax.Error()},
		{"two objects on two lines", []byte("{\"k\":\"s3cr3t\"}\n{}"), false, 400, event.ErrSyntax.Error()},
		{"short trailing garbage", []byte(`{}x`), false, 400, event.ErrSyntax.Error()},
		{"short two objects", []byte(`{}{}`), false, 400, event.ErrSyntax.Error()},
		{"invalid UTF-8 in a value", []byte("{\"k\":\"s3cr3t\xff\"}"), false, 400, event.ErrUTF8.Error()},
		{"invalid UTF-8 in a key", []byte("{\"\xc3\x28\":\"s3cr3t\"}"), false, 400, event.ErrUTF8.Error()},
		{"byte order mark", []byte("\xef\xbb\xbf{\"k\":\"s3cr3t\"}"), false, 400, event.ErrSyntax.Error()},
		{"truncated", []byte(`{"k":"s3cr3t"`), false, 400, event.ErrSyntax.Error()},
		{"truncated mid-string", []byte(`{"k":"s3cr`), false, 400, event.ErrSyntax.Error()},
		{"control character in a string", []byte("{\"k\":\"s3cr3t\x00\"}"), false, 400, event.ErrSyntax.Error()},
		{"single quotes", []byte(`{'k':'s3cr3t'}`), false, 400, event.ErrSyntax.Error()},
		{"fixture with trailing comma", ssetest.Fixture(t, "start-invalid-trailing-comma.json"), false, 400, event.ErrSyntax.Error()},
		{"chunked, invalid", []byte(`{"k":"s3cr3t",}`), true, 400, event.ErrSyntax.Error()},
		{"over MAX_BODY_BYTES with Content-Length", big, false, 413, tooLarge},
		{"over MAX_BODY_BYTES chunked", big, true, 413, tooLarge},
		{"one byte over MAX_BODY_BYTES", []byte(`{"k":"s3cr3t` + strings.Repeat("x", maxBody-13) + `"}`), false, 413, tooLarge},
	}
	rejected := 0
	for i, c := range cases {
		path := []string{"/api/events", "/metrics"}[i%2]
		t.Run(c.name, func(t *testing.T) {
			rejected++
			r := post(t, srv, path, c.body, c.chunked)
			wantError(t, r, c.status, c.msg, c.body)
		})
	}

	t.Run("exactly MAX_BODY_BYTES is accepted", func(t *testing.T) {
		body := []byte(`{"k":"` + strings.Repeat("x", maxBody-8) + `"}`)
		if len(body) != maxBody {
			t.Fatalf("body is %d bytes", len(body))
		}
		if r := post(t, srv, "/api/events", body, false); r.Status != http.StatusNoContent {
			t.Fatalf("status %d %s", r.Status, r.Body)
		}
		if got := listener.NextData(t, within(t, 10*time.Second)); got != string(body) {
			t.Errorf("listener got %.60q…", got)
		}
	})

	t.Run("body trickled slower than BODY_READ_TIMEOUT", func(t *testing.T) {
		rejected++
		trickleBody(t, srv, listener, readTimeout)
	})

	// Nothing refused reached the listener: the next event it sees is the
	// one posted now, and ingest still works.
	good := ssetest.Fixture(t, "stop.json")
	srv.Publish(t, good)
	if got := listener.NextData(t, within(t, 10*time.Second)); got != compact(t, good) {
		t.Errorf("listener got %.120q, want the good event", got)
	}
	h, _ := srv.Health(t)
	if h.EventsRejected != uint64(rejected) || h.EventsAccepted != 3 {
		t.Errorf("health events_rejected %d, events_accepted %d; want %d and 3", h.EventsRejected, h.EventsAccepted, rejected)
	}
}

// post sends body to path, with Content-Length or chunked.
func post(t *testing.T, srv *ssetest.Server, path string, body []byte, chunked bool) ssetest.Response {
	t.Helper()
	ctx := within(t, 10*time.Second)
	if !chunked {
		r, err := srv.Post(ctx, path, "application/json", body)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// A reader of unknown length makes the client send it chunked.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+path, io.MultiReader(bytes.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.TransferEncoding = []string{"chunked"}
	resp, err := srv.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return ssetest.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// trickleBody sends a POST whose body arrives a byte at a time, slower
// than timeout allows, over raw TCP. The server must answer 408 or cut the
// connection, and keep serving other clients meanwhile.
func trickleBody(t *testing.T, srv *ssetest.Server, listener *ssetest.Stream, timeout time.Duration) {
	conn := srv.Dial(t)
	const head = "POST /api/events HTTP/1.1\r\nHost: dispatcher\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{"
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		// 40 bytes at timeout/4 apart: far beyond the timeout, and never the
		// whole 64-byte body.
		tick := time.NewTicker(timeout / 4)
		defer tick.Stop()
		for range 40 {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := io.WriteString(conn, " "); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); <-trickled }()

	// Others are served while the trickle goes on.
	const during = `{"during":"trickle"}`
	srv.Publish(t, []byte(during))
	if got := listener.NextData(t, within(t, 10*time.Second)); got != during {
		t.Fatalf("listener got %.120q, want %s", got, during)
	}

	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // a guard against a hang only
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		if !isConnCut(err) {
			t.Fatalf("want 408 or the connection cut, got %v", err)
		}
		t.Logf("connection cut: %v", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	wantError(t, ssetest.Response{Status: resp.StatusCode, Header: resp.Header, Body: b},
		http.StatusRequestTimeout, "body not received within "+timeout.String(), nil)
}

func TestClientIPFieldIsSetFromThePeerOrTrustedProxies(t *testing.T) {
	t.Parallel()
	noProxy := ssetest.Start(t, broadcast.Options{}, server.Options{
		ClientIPField: "user_ip", ClientIP: clientip.New(nil),
	})
	viaProxy := ssetest.Start(t, broadcast.Options{}, server.Options{
		ClientIPField: "user_ip", ClientIP: clientip.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}),
	})
	fixture := ssetest.Fixture(t, "start-web.json")
	plain := compact(t, fixture)
	withIP := func(ip string) string { return plain[:len(plain)-1] + `,"user_ip":"` + ip + `"}` }

	cases := []struct {
		name   string
		srv    *ssetest.Server
		xff    []string
		body   []byte
		wantIP string
	}{
		{"no proxy trusted: peer address", noProxy, nil, fixture, "127.0.0.1"},
		{"no proxy trusted: spoofed X-Forwarded-For ignored", noProxy, []string{"203.0.113.7"}, fixture, "127.0.0.1"},
		{"no proxy trusted: client-sent user_ip replaced", noProxy, []string{"203.0.113.7"},
			ssetest.WithMembers(fixture, `"user_ip":"203.0.113.66"`), "127.0.0.1"},
		{"no proxy trusted: every client-sent user_ip removed", noProxy, nil,
			ssetest.WithMembers(fixture, `"user_ip":"203.0.113.66","user_ip":"203.0.113.67"`), "127.0.0.1"},
		{"trusted proxy: single entry", viaProxy, []string{"203.0.113.7"}, fixture, "203.0.113.7"},
		{"trusted proxy: right-most untrusted entry", viaProxy, []string{"198.51.100.1, 203.0.113.7"}, fixture, "203.0.113.7"},
		{"trusted proxy: trusted hops skipped", viaProxy, []string{"198.51.100.1, 203.0.113.7, 127.0.0.9"}, fixture, "203.0.113.7"},
		{"trusted proxy: several headers read in order", viaProxy, []string{"198.51.100.1", "203.0.113.7"}, fixture, "203.0.113.7"},
		{"trusted proxy: no header falls back to the peer", viaProxy, nil, fixture, "127.0.0.1"},
		{"trusted proxy: garbage stops the walk", viaProxy, []string{"203.0.113.7, not-an-ip"}, fixture, "127.0.0.1"},
		{"trusted proxy: client-sent user_ip replaced", viaProxy, []string{"203.0.113.7"},
			ssetest.WithMembers(fixture, `"user_ip":"198.51.100.66"`), "203.0.113.7"},
	}
	streams := map[*ssetest.Server]*ssetest.Stream{
		noProxy:  ssetest.Subscribe(t, noProxy.Client, noProxy.URL+"/events", nil),
		viaProxy: ssetest.Subscribe(t, viaProxy.Client, viaProxy.URL+"/events", nil),
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := within(t, 10*time.Second)
			h := http.Header{"Content-Type": {"application/json"}}
			if c.xff != nil {
				h["X-Forwarded-For"] = c.xff
			}
			r, err := c.srv.Do(ctx, http.MethodPost, "/api/events", h, c.body)
			if err != nil || r.Status != http.StatusNoContent {
				t.Fatalf("POST: %v, status %d %s", err, r.Status, r.Body)
			}
			if got, want := streams[c.srv].NextData(t, ctx), withIP(c.wantIP); got != want {
				t.Errorf("listener got\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// Without CLIENT_IP_FIELD the event passes through untouched, user_ip
// included.
func TestClientIPFieldUnsetLeavesEventsUntouched(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{ClientIP: clientip.New(nil)})
	s := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	body := ssetest.WithMembers(ssetest.Fixture(t, "start.json"), `"user_ip":"203.0.113.66"`)
	srv.Publish(t, body)
	if got := s.NextData(t, within(t, 10*time.Second)); got != compact(t, body) {
		t.Errorf("listener got %s", got)
	}
}
