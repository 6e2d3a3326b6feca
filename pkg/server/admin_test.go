package server_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

// get fetches url and returns its status and body.
func get(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(within(t, 30*time.Second), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// Liveness stays 200 through a drain that turns readiness and the public
// health to 503: restarting a draining process would only cut its streams.
func TestLivezStaysUpWhileReadyzAndHealthDrain(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	check := func(when string, ready int, status string) {
		t.Helper()
		if code, body := get(t, http.MethodGet, srv.Admin+"/livez"); code != http.StatusOK || !strings.Contains(body, `"ok"`) {
			t.Errorf("%s: /livez %d %s, want 200 ok", when, code, body)
		}
		for _, url := range []string{srv.Admin + "/readyz", srv.URL + "/health"} {
			if code, body := get(t, http.MethodGet, url); code != ready || !strings.Contains(body, `"status":"`+status+`"`) {
				t.Errorf("%s: %s %d %s, want %d %s", when, url, code, body, ready, status)
			}
			if code, _ := get(t, http.MethodHead, url); code != ready {
				t.Errorf("%s: HEAD %s %d, want %d", when, url, code, ready)
			}
		}
	}
	check("serving", http.StatusOK, "ok")
	srv.Server.Drain()
	check("draining", http.StatusServiceUnavailable, "draining")
	if m := ssetest.Scrape(t, srv.Admin+"/metrics"); m.Samples["event_dispatcher_draining"] != 1 {
		t.Errorf("event_dispatcher_draining %v while draining, want 1", m.Samples["event_dispatcher_draining"])
	}
}

// Not parallel: a CPU profile and a trace slow down every test running
// alongside, some of which time the fan-out.
func TestPprofAnswersOnTheAdminPortOnly(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	for path, want := range map[string]string{
		"/debug/pprof/":                  "goroutine",
		"/debug/pprof/goroutine?debug=1": "goroutine profile:",
		"/debug/pprof/heap?debug=1":      "heap profile:",
		"/debug/pprof/symbol":            "num_symbols",
		"/debug/pprof/cmdline":           "",
		"/debug/pprof/profile?seconds=1": "", // a gzipped protobuf
		"/debug/pprof/trace?seconds=0.1": "",
	} {
		code, body := get(t, http.MethodGet, srv.Admin+path)
		if code != http.StatusOK || len(body) == 0 || !strings.Contains(body, want) {
			t.Errorf("%s: %d, %d bytes, want 200 containing %q", path, code, len(body), want)
		}
	}
	// The public port serves none of the operators' routes, and keeps
	// GET /metrics for nothing: POST /metrics is the ingest alias.
	for _, path := range []string{"/debug/pprof/", "/livez", "/readyz"} {
		if code, _ := get(t, http.MethodGet, srv.URL+path); code != http.StatusNotFound {
			t.Errorf("public GET %s: %d, want 404", path, code)
		}
	}
	if code, _ := get(t, http.MethodGet, srv.URL+"/metrics"); code != http.StatusMethodNotAllowed {
		t.Errorf("public GET /metrics: %d, want 405", code)
	}
	if code, _ := get(t, http.MethodPost, srv.Admin+"/metrics"); code != http.StatusMethodNotAllowed {
		t.Errorf("admin POST /metrics: %d, want 405", code)
	}
}

// The metrics include the Go runtime and the process, and the text format
// is what Prometheus parses.
func TestMetricsIncludeRuntimeAndProcess(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{QueueSize: 77}, server.Options{})
	m := ssetest.Scrape(t, srv.Admin+"/metrics")
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes", "process_cpu_seconds_total"} {
		if !m.Names[name] {
			t.Errorf("%s not exported", name)
		}
	}
	if got := m.Samples["event_dispatcher_publish_queue_capacity"]; got != 77 {
		t.Errorf("publish_queue_capacity %v, want 77", got)
	}
}

// One timed profile at a time: while a CPU profile runs, another profile or
// a trace gets 429 with a JSON error, and the other admin routes answer.
func TestOneProfileAtATime(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	first := make(chan int, 1)
	go func() {
		for {
			resp, err := http.Get(srv.Admin + "/debug/pprof/profile?seconds=5")
			if err != nil {
				first <- 0
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusTooManyRequests { // else a trace below held it: again
				first <- resp.StatusCode
				return
			}
		}
	}()
	// Once the profile holds the profiler for its 5 s, a short trace
	// polled meanwhile meets it.
	refused := false
	for !refused {
		select {
		case code := <-first:
			t.Fatalf("the profile ended (%d) before a trace was refused", code)
		default:
		}
		code, body := get(t, http.MethodGet, srv.Admin+"/debug/pprof/trace?seconds=0.1")
		switch code {
		case http.StatusTooManyRequests:
			if !strings.Contains(body, `"error":"another profile or trace is running`) {
				t.Fatalf("429 body %s", body)
			}
			refused = true
		case http.StatusOK:
		default:
			t.Fatalf("trace: %d %s", code, body)
		}
		if code, _ := get(t, http.MethodGet, srv.Admin+"/livez"); code != http.StatusOK {
			t.Fatalf("/livez %d during a profile", code)
		}
	}
	if code := <-first; code != http.StatusOK {
		t.Fatalf("the first profile: %d", code)
	}
	if code, _ := get(t, http.MethodGet, srv.Admin+"/debug/pprof/trace?seconds=0.1"); code != http.StatusOK {
		t.Fatalf("a trace after the profile ended: %d", code)
	}
}

// seconds= is bounded wherever pprof reads it from, so no request holds
// the profiler, and its connection, for longer.
func TestProfileSecondsBounded(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	for _, path := range []string{"/debug/pprof/profile?seconds=61", "/debug/pprof/trace?seconds=3600", "/debug/pprof/heap?seconds=1e9", "/debug/pprof/profile?seconds=-1", "/debug/pprof/profile?seconds=x"} {
		if code, body := get(t, http.MethodGet, srv.Admin+path); code != http.StatusBadRequest || !strings.Contains(body, `"error":"seconds must be`) {
			t.Errorf("%s: %d %s, want 400 with a JSON error", path, code, body)
		}
	}
	resp, err := http.Post(srv.Admin+"/debug/pprof/profile", "application/x-www-form-urlencoded", strings.NewReader("seconds=100000"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("seconds=100000 in a form body: %d, want 400", resp.StatusCode)
	}
	if code, _ := get(t, http.MethodGet, srv.Admin+"/debug/pprof/heap"); code != http.StatusOK {
		t.Errorf("a heap profile without seconds: %d", code)
	}
	big, err := http.Post(srv.Admin+"/debug/pprof/symbol", "text/plain", strings.NewReader(strings.Repeat("0x1+", 1<<19)))
	if err != nil {
		t.Fatal(err)
	}
	big.Body.Close()
	if big.StatusCode != http.StatusBadRequest {
		t.Errorf("a 2 MiB body on the admin port: %d, want 400", big.StatusCode)
	}
	sym, err := http.Post(srv.Admin+"/debug/pprof/symbol", "text/plain", strings.NewReader("0x1"))
	if err != nil {
		t.Fatal(err)
	}
	sym.Body.Close()
	if sym.StatusCode != http.StatusOK {
		t.Errorf("a symbol lookup: %d", sym.StatusCode)
	}
}

// A body trickled in to the admin port keeps the others out instead of
// joining them: while one is read, another POST gets 429 at once and its
// connection is closed, so trickled bodies cannot fill the admin port's
// connections and starve /livez.
func TestAdminReadsOneBodyAtATime(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	trickler, err := net.Dial("tcp", strings.TrimPrefix(srv.Admin, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer trickler.Close()
	if _, err := trickler.Write([]byte("POST /debug/pprof/symbol HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0x1")); err != nil {
		t.Fatal(err)
	}
	post := func() (int, string) {
		resp, err := http.Post(srv.Admin+"/debug/pprof/symbol", "text/plain", strings.NewReader("0x1"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusTooManyRequests && !resp.Close {
			t.Error("a refused body's connection is kept open: net/http would wait to discard the body")
		}
		return resp.StatusCode, string(b)
	}
	// The trickled body is being read once a complete one is refused.
	ssetest.Eventually(t, 30*time.Second, "a second body refused while one trickles in", func() (bool, string) {
		code, body := post()
		return code == http.StatusTooManyRequests && strings.Contains(body, `"error":"another request body`), fmt.Sprint(code, body)
	})
	if code, _ := get(t, http.MethodGet, srv.Admin+"/livez"); code != http.StatusOK {
		t.Fatalf("/livez while a body trickles in: %d", code)
	}
	// A second trickler is answered and its connection closed at once,
	// not held while net/http discards its body.
	second, err := net.Dial("tcp", strings.TrimPrefix(srv.Admin, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if _, err := second.Write([]byte("POST /debug/pprof/symbol HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0x1")); err != nil {
		t.Fatal(err)
	}
	_ = second.SetReadDeadline(time.Now().Add(30 * time.Second))
	answer, err := io.ReadAll(second) // until the server closes it
	if err != nil || !strings.HasPrefix(string(answer), "HTTP/1.1 429") {
		t.Fatalf("a second trickled body: %q, %v; want a 429 and the connection closed", answer, err)
	}
	_ = trickler.Close()
	ssetest.Eventually(t, 30*time.Second, "a body read once the trickler is gone", func() (bool, string) {
		code, body := post()
		return code == http.StatusOK, fmt.Sprint(code, body)
	})
}
