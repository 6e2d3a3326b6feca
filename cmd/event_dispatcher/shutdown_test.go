package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
)

// shutdownEnv is the configuration of the shutdown scenario: a free port,
// fast heartbeats so comments interleave with events, and listener buffers
// large enough that a test reader slowed by the race detector is never
// dropped (dropping is tested elsewhere).
func shutdownEnv() []string {
	return []string{"PORT=0", "ADMIN_PORT=0", "HEARTBEAT_INTERVAL=50ms", "SUBSCRIBER_BUFFER_BYTES=33554432", "WRITE_TIMEOUT=5s"}
}

// instance is a running service as the shutdown scenario sees it.
type instance struct {
	base            string       // "http://127.0.0.1:port"
	logs            *logSink     // its JSON log
	stop            func()       // SIGTERM, or cancelling run's context
	exited          <-chan error // closed on a clean exit; an error otherwise
	shutdownTimeout time.Duration
	// transport makes the clients' transports; nil: HTTP/1.1 defaults.
	transport func() *http.Transport
}

// newTransport returns a transport as in.transport makes them.
func (in instance) newTransport() *http.Transport {
	if in.transport == nil {
		return &http.Transport{}
	}
	return in.transport()
}

// eventBody is event seq as a player might send it: pretty-printed.
func eventBody(seq int) []byte {
	return fmt.Appendf(nil, "{\n  \"seq\": %d,\n  \"event_name\": \"HEARTBEAT\",\n  \"session_id\": \"s-%d\",\n  \"data\": { \"position\": %d.50 }\n}\n", seq, seq, seq*10)
}

// wantData is the data line listeners must receive for eventBody(seq).
func wantData(t *testing.T, seq int) string {
	var b bytes.Buffer
	if err := json.Compact(&b, eventBody(seq)); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// post sends event seq and returns the status, or the transport error.
func post(ctx context.Context, client *http.Client, base string, seq int) (int, error) {
	path := "/api/events"
	if seq%2 == 1 {
		path = "/metrics"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(eventBody(seq)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "text/plain;charset=UTF-8") // as navigator.sendBeacon sends
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// posters publish events concurrently, each one after another until one
// of its events is refused or fails, recording which were accepted.
type posters struct {
	n, from   int // poster k sends from+k, from+k+n, from+k+2n, ...
	mu        sync.Mutex
	accepted  [][]int      // per poster, in publish order
	uncertain map[int]bool // transport error: may or may not have been published
	total     int
	started   chan struct{} // closed once a few events were accepted
	startOnce sync.Once
	wg        sync.WaitGroup
}

func startPosters(ctx context.Context, client *http.Client, base string, n, from, max int) *posters {
	p := &posters{n: n, from: from, accepted: make([][]int, n), uncertain: map[int]bool{}, started: make(chan struct{})}
	for k := range n {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.startOnce.Do(func() { close(p.started) })
			for seq := from + k; seq < from+max; seq += n {
				code, err := post(ctx, client, base, seq)
				p.mu.Lock()
				switch {
				case err != nil:
					p.uncertain[seq] = true
				case code == http.StatusNoContent:
					p.accepted[k] = append(p.accepted[k], seq)
					if p.total++; p.total == 2*n {
						p.startOnce.Do(func() { close(p.started) })
					}
				}
				p.mu.Unlock()
				if err != nil || code != http.StatusNoContent {
					return
				}
			}
		}()
	}
	return p
}

// source is the poster that sent seq, or -1 for events sent before.
func (p *posters) source(seq int) int {
	if seq < p.from {
		return -1
	}
	return (seq - p.from) % p.n
}

// checkGracefulShutdown runs the shutdown scenario against in: three
// listeners, events accepted before and while the stop arrives, then
// checks that every listener got every accepted event, in order, then a
// end comment and a clean end of stream; that /health no longer answers 200;
// that the service exits cleanly within the shutdown timeout; and what it
// logged.
func checkGracefulShutdown(t *testing.T, in instance) {
	guard, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tr := in.newTransport()
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	const nListeners, nBefore = 3, 20
	streams := make([]*ssetest.Stream, nListeners)
	for i := range streams {
		// The real consumer sends a Content-Type on its GET.
		streams[i] = ssetest.Subscribe(t, client, in.base+"/events", http.Header{"Content-Type": {"application/json"}})
	}
	// Read every stream to its end in the background, so that no listener
	// falls behind while events flow.
	type result struct {
		blocks []ssetest.Event
		err    error
	}
	results := make([]chan result, nListeners)
	for i, s := range streams {
		results[i] = make(chan result, 1)
		go func() {
			var r result
			for {
				e, err := s.Next(guard)
				if err != nil {
					r.err = err
					break
				}
				r.blocks = append(r.blocks, e)
			}
			results[i] <- r
		}()
	}

	var accepted []int
	for seq := range nBefore {
		code, err := post(guard, client, in.base, seq)
		if err != nil || code != http.StatusNoContent {
			t.Fatalf("POST event %d: status %d, %v", seq, code, err)
		}
		accepted = append(accepted, seq)
	}
	// Keep publishing while the stop arrives: what is accepted then must be
	// delivered too.
	pubTr := in.newTransport()
	defer pubTr.CloseIdleConnections()
	pub := startPosters(guard, &http.Client{Transport: pubTr}, in.base, 4, nBefore, 40000)
	<-pub.started
	in.stop()
	pub.wg.Wait() // each poster ends at its first refusal; guard bounds the rest
	// A connection the transport dialled but did not use would hold
	// http.Server.Shutdown for 5 s (it waits that long on accepted
	// connections that sent no request): release it, as a client would.
	pubTr.CloseIdleConnections()
	during := 0
	for _, a := range pub.accepted {
		during += len(a)
	}

	// Every stream must end by itself within the shutdown timeout.
	wait := time.After(in.shutdownTimeout + 10*time.Second)
	for i := range results {
		var r result
		select {
		case r = <-results[i]:
		case <-wait:
			t.Fatalf("listener %d: stream still open %s after the stop", i, in.shutdownTimeout)
		}
		checkStream(t, i, r.blocks, r.err, accepted, pub)
	}

	// The streams ended after /health switched to 503, so from now on it
	// must not answer 200, if the port accepts connections at all.
	checkNotHealthy(t, in.base)

	select {
	case err, ok := <-in.exited:
		if ok {
			t.Errorf("did not stop cleanly: %v", err)
		}
	case <-time.After(in.shutdownTimeout + 10*time.Second):
		t.Fatalf("still running %s after the stop", in.shutdownTimeout+10*time.Second)
	}

	for _, msg := range []string{"shutting down", "stopped"} {
		if len(in.logs.records(msg)) != 1 {
			t.Errorf("log has not exactly one %q line:\n%s", msg, in.logs)
		}
	}
	if recs := in.logs.records("graceful shutdown incomplete; closing remaining connections"); len(recs) > 0 {
		t.Errorf("shutdown was not graceful: %v", recs)
	}
	ended := 0
	for _, rec := range in.logs.records("listener disconnected") {
		if rec["reason"] == "server shutting down" {
			ended++
		}
	}
	if ended != nListeners {
		t.Errorf("%d listeners logged as ended by the shutdown, want %d:\n%s", ended, nListeners, in.logs)
	}
	if recs := in.logs.records("stopped"); len(recs) != 1 {
		t.Errorf("%d \"stopped\" lines, want 1", len(recs))
	} else if took, ok := recs[0]["took_s"].(float64); !ok || took <= 0 {
		t.Errorf("stopped line %v lacks took_s, the seconds it took", recs[0])
	}
	if recs := in.logs.records("shutting down"); len(recs) != 1 || recs[0]["timeout_ms"] != float64(in.shutdownTimeout.Milliseconds()) {
		t.Errorf("shutting down lines %v, want one with timeout_ms %d", recs, in.shutdownTimeout.Milliseconds())
	}
	t.Logf("%d events accepted before the stop, %d by concurrent publishers, %d uncertain", len(accepted), during, len(pub.uncertain))
}

// checkStream checks what listener i received after its opening retry hint:
// the events accepted before the publishers started, in order, then every
// event the publishers got accepted, each publisher's in its order (events
// whose POST failed in transit may or may not be there), heartbeats, then
// the comment saying the server shut down, and a clean end.
func checkStream(t *testing.T, i int, blocks []ssetest.Event, err error, before []int, pub *posters) {
	t.Helper()
	if !errors.Is(err, io.EOF) {
		t.Errorf("listener %d: stream did not end cleanly: %v", i, err)
	}
	if len(blocks) == 0 {
		t.Errorf("listener %d: received nothing", i)
		return
	}
	last := blocks[len(blocks)-1]
	if why, ok := last.EndReason(); !ok || why != "server shutting down" {
		t.Errorf("listener %d: last block %q is not the shutdown comment", i, last.Raw)
	}
	var got []int
	for _, b := range blocks[:len(blocks)-1] {
		switch {
		case b.IsComment():
			if len(b.Comments) != 1 || b.Comments[0] != "hb" {
				t.Errorf("listener %d: unexpected comment block %q", i, b.Raw)
			}
			continue
		case len(b.Data) != 1 || b.Retry != "" || len(b.Comments)+len(b.Other) > 0:
			t.Errorf("listener %d: block %q is not one data line", i, b.Raw)
			continue
		}
		var ev struct{ Seq int }
		if err := json.Unmarshal([]byte(b.Data[0]), &ev); err != nil {
			t.Errorf("listener %d: data %q: %v", i, b.Data[0], err)
			continue
		}
		if want := wantData(t, ev.Seq); b.Data[0] != want {
			t.Errorf("listener %d: data %q, want %q", i, b.Data[0], want)
		}
		if !pub.uncertain[ev.Seq] {
			got = append(got, ev.Seq)
		}
	}
	if n := min(len(got), len(before)); !slices.Equal(got[:n], before) {
		t.Errorf("listener %d: first events %s, want %s", i, summary(got[:n]), summary(before))
	}
	bySource := make([][]int, pub.n)
	for _, seq := range got[min(len(got), len(before)):] {
		if k := pub.source(seq); k >= 0 {
			bySource[k] = append(bySource[k], seq)
		} else {
			t.Errorf("listener %d: event %d again or out of order", i, seq)
		}
	}
	for k := range bySource {
		if !slices.Equal(bySource[k], pub.accepted[k]) {
			t.Errorf("listener %d: from publisher %d received %s, want the accepted %s", i, k, summary(bySource[k]), summary(pub.accepted[k]))
		}
	}
}

// summary shortens a long sequence list for failure messages.
func summary(seqs []int) string {
	if len(seqs) <= 12 {
		return fmt.Sprint(seqs)
	}
	return fmt.Sprintf("%v ... %v (%d)", seqs[:6], seqs[len(seqs)-6:], len(seqs))
}

// checkNotHealthy asserts that /health, on a fresh connection, answers 503
// or that nothing accepts the connection any more.
func checkNotHealthy(t *testing.T, base string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Get(base + "/health")
	if err != nil {
		return // the listener is closed
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"draining"`) {
		t.Errorf("/health during shutdown: %d %s, want 503 draining", resp.StatusCode, body)
	}
}

// The same scenario in-process, through run, so that the race detector
// watches the whole shutdown path.
func TestRunGracefulShutdown(t *testing.T) {
	checkGracefulShutdown(t, runInProcess(t, nil))
}

// The same scenario with every stream and POST over HTTP/2, in cleartext
// (h2c) and over TLS: at the stop, net/http sends GOAWAY and every stream
// still gets its events, the end comment and a clean end.
func TestRunGracefulShutdownHTTP2(t *testing.T) {
	certFile, keyFile, roots := ssetest.WriteCertificate(t, t.TempDir(), "dispatcher")
	for _, tc := range []struct {
		name      string
		env       []string
		protocols func(*http.Protocols)
	}{
		{"h2c", nil, func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) }},
		{"tls", []string{"TLS_CERT_FILE=" + certFile, "TLS_KEY_FILE=" + keyFile}, func(p *http.Protocols) { p.SetHTTP2(true) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := runInProcess(t, tc.env)
			if tc.env != nil {
				in.base = strings.Replace(in.base, "http://", "https://", 1)
			}
			in.transport = func() *http.Transport {
				var p http.Protocols // HTTP/2 only: no request can fall back to HTTP/1.1
				tc.protocols(&p)
				return &http.Transport{Protocols: &p, TLSClientConfig: &tls.Config{RootCAs: roots}}
			}
			checkGracefulShutdown(t, in)
		})
	}
}

// runInProcess starts the service through run with the shutdown scenario's
// configuration plus env, and returns it once it listens.
func runInProcess(t *testing.T, env []string) instance {
	const shutdownTimeout = 10 * time.Second
	for _, name := range envNames() {
		t.Setenv(name, "")
	}
	for _, kv := range append(append(shutdownEnv(), "SHUTDOWN_TIMEOUT="+shutdownTimeout.String()), env...) {
		name, value, _ := strings.Cut(kv, "=")
		t.Setenv(name, value)
	}
	unsetEmpty(t)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	logs, stderr := newLogSink(), newLogSink()
	ready := make(chan string, 1)
	exited := make(chan error, 1)
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		if err := run(ctx, nil, logs, stderr, ready); err != nil {
			exited <- err
		}
		close(exited)
	}()
	var addr string
	select {
	case addr = <-ready:
	case <-gone:
		t.Fatalf("run ended before listening: %v; stderr:\n%s", <-exited, stderr)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not become ready")
	}
	if rec := logs.waitFor(t, "event dispatcher listening", gone, 10*time.Second); rec["addr"] != addr {
		t.Errorf("start-up line addr %v, ready sent %q", rec["addr"], addr)
	}
	return instance{base: baseURL(t, addr), logs: logs, stop: cancel, exited: exited, shutdownTimeout: shutdownTimeout}
}

// unsetEmpty unsets the service variables that are set to "" (t.Setenv
// restores them afterwards): set-but-empty is not the same as unset.
func unsetEmpty(t *testing.T) {
	for _, name := range envNames() {
		if v, ok := os.LookupEnv(name); ok && v == "" {
			if err := os.Unsetenv(name); err != nil {
				t.Fatal(err)
			}
		}
	}
}
