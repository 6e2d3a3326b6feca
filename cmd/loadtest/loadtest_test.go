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
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
	"event-dispatcher/pkg/tlscert"
)

// dispatcherBinary is the event_dispatcher command built once by TestMain,
// for the tests that kill the server.
var dispatcherBinary string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "loadtest-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	dispatcherBinary = filepath.Join(dir, "event_dispatcher")
	// The Dockerfile's build flags, as cmd/event_dispatcher's tests use:
	// one build of the dependencies in the cache for all of them.
	build := exec.Command("go", "build", "-trimpath", "-o", dispatcherBinary, "event-dispatcher/cmd/event_dispatcher")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the dispatcher: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// startDispatcher runs the real dispatcher handler on a loopback port, with
// heartbeats mixed into the stream (the load tool must ignore them).
func startDispatcher(t *testing.T, hub broadcast.Options) *ssetest.Server {
	t.Helper()
	if hub.Heartbeat == 0 {
		hub.Heartbeat = 50 * time.Millisecond
	}
	return ssetest.Start(t, hub, server.Options{})
}

// guard bounds a test that talks to a server, against hangs only.
func guard(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// runJSON runs the tool with args plus -json and returns its report and
// the error runMain returned.
func runJSON(t *testing.T, ctx context.Context, args ...string) (report, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := runMain(ctx, append(args, "-json"), &out, &errOut, terminals{})
	if err != nil && !errors.Is(err, errCheck) {
		t.Fatalf("runMain: %v\nstderr: %s", err, errOut.String())
	}
	var rep report
	if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
		t.Fatalf("output is not one JSON report: %v\n%s\nstderr: %s", jerr, out.String(), errOut.String())
	}
	if (err == nil) != rep.Check.Pass {
		t.Fatalf("runMain returned %v but the report's check says pass=%v", err, rep.Check.Pass)
	}
	return rep, err
}

func TestRunAgainstDispatcher(t *testing.T) {
	for _, paths := range [][2]string{{"/metrics", "/event-dispatcher"}, {"/api/events", "/events"}} {
		t.Run(paths[0], func(t *testing.T) {
			ts := startDispatcher(t, broadcast.Options{})
			rep, err := runJSON(t, guard(t), "-url", ts.URL, "-ingest-path", paths[0], "-stream-path", paths[1],
				"-listeners", "5", "-publishers", "3", "-events", "300", "-duration", "1m",
				"-settle", "30s", "-server-pid", fmt.Sprint(os.Getpid()))
			if err != nil || !rep.Check.Pass || len(rep.Check.Failures) > 0 {
				t.Fatalf("a clean run failed its check: %v %+v", err, rep.Check)
			}
			if rep.Connect.Connected != 5 || rep.Connect.Failed != 0 {
				t.Fatalf("connect = %+v, want 5 connected", rep.Connect)
			}
			r := rep.Result
			if r == nil {
				t.Fatal("no result")
			}
			if r.Posts.Sent != 300 || r.Posts.Accepted != 300 || r.Posts.Rejected != 0 || r.Posts.TransportErrors != 0 {
				t.Errorf("posts = %+v, want 300 sent and accepted", r.Posts)
			}
			if r.Posts.ByStatus["204"] != 300 {
				t.Errorf("by status = %v, want 300 x 204", r.Posts.ByStatus)
			}
			d := r.Deliveries
			want := deliveries{Expected: 1500, Delivered: 1500, PerSecond: d.PerSecond}
			if d != want {
				t.Errorf("deliveries = %+v, want %+v", d, want)
			}
			if r.Listeners != (phaseListeners{Owed: 5, Connected: 5}) {
				t.Errorf("listeners = %+v, want 5 throughout", r.Listeners)
			}
			if r.Latency.Count != 1500 || r.Latency.MaxMS < r.Latency.P99MS || r.Latency.P99MS < r.Latency.P50MS {
				t.Errorf("latency = %+v, want 1500 ordered samples", r.Latency)
			}
			// The test process is the server: its figures must be there.
			if rep.Server == nil || r.Server == nil || rep.Server.RSSBeforeKB <= 0 || r.Server.RSSPeakKB <= 0 {
				t.Errorf("server figures missing: %+v %+v", rep.Server, r.Server)
			}
		})
	}
}

// With -http2 the listeners are streams sharing HTTP/2 connections (h2c,
// or h2 over TLS with -cacert) and the publishers post over HTTP/2 too; the
// tool's transports cannot fall back to HTTP/1.1, so a clean run proves
// the protocol.
func TestRunOverHTTP2(t *testing.T) {
	certFile, keyFile, roots := ssetest.WriteCertificate(t, t.TempDir(), "loadtest")
	for _, mode := range []string{"h2c", "tls"} {
		t.Run(mode, func(t *testing.T) {
			hub := broadcast.Options{Heartbeat: 50 * time.Millisecond}
			var ts *ssetest.Server
			args := []string{}
			if mode == "tls" {
				certs, err := tlscert.New(certFile, keyFile, 0, zerolog.Nop())
				if err != nil {
					t.Fatal(err)
				}
				ts = ssetest.StartTLS(t, hub, server.Options{}, certs.TLSConfig(), roots)
				args = append(args, "-cacert", certFile)
			} else {
				ts = startDispatcher(t, hub)
			}
			rep, err := runJSON(t, guard(t), append(args, "-url", ts.URL, "-http2", "-streams-per-conn", "2",
				"-listeners", "5", "-publishers", "3", "-events", "200", "-duration", "1m", "-settle", "30s")...)
			if err != nil || rep.Result == nil {
				t.Fatalf("a clean run over HTTP/2 failed: %v %+v", err, rep.Check)
			}
			if d := rep.Result.Deliveries; d.Expected != 1000 || d.Delivered != 1000 || rep.Result.Posts.Accepted != 200 {
				t.Errorf("deliveries %+v, posts %+v: want 200 accepted, 1000 delivered", d, rep.Result.Posts)
			}
		})
	}
}

func TestInterruptStillReports(t *testing.T) {
	ts := startDispatcher(t, broadcast.Options{})
	u, _ := url.Parse(ts.URL)
	cfg := config{
		URLs: []*url.URL{u}, IngestPath: "/metrics", StreamPath: "/event-dispatcher", Listeners: 2, Publishers: 2, Scenario: scenarioSteady,
		Rate: 100, Duration: maxDuration, Fixture: "start", Settle: time.Minute,
		PostTimeout: 10 * time.Second, ConnectTimeout: 10 * time.Second,
	}
	ctx, cancel := context.WithCancel(guard(t))
	time.AfterFunc(200*time.Millisecond, cancel)
	rep, err := run(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Interrupted || rep.Result == nil {
		t.Fatalf("report = %+v, want an interrupted one with a result", rep)
	}
	if d := rep.Result.Deliveries; d.Duplicates != 0 || d.Delivered > d.Expected {
		t.Errorf("deliveries = %+v", d)
	}
	// An interrupted run is no proof of anything: it does not pass.
	if rep.Check.Pass || !strings.Contains(strings.Join(rep.Check.Failures, ";"), "interrupted") {
		t.Errorf("check = %+v, want a failure for the interrupt", rep.Check)
	}
}

func TestRefusesWithoutURL(t *testing.T) {
	for _, args := range [][]string{nil, {"-listeners", "3"}, {"-url", ""}, {"-url", "127.0.0.1:3569"}, {"-url", "ftp://x/"}} {
		var out, errOut bytes.Buffer
		err := runMain(context.Background(), args, &out, &errOut, terminals{})
		if !errors.Is(err, errUsage) {
			t.Errorf("%q: err = %v, want a usage error", args, err)
		}
		if !strings.Contains(errOut.String(), "-url") || out.Len() != 0 {
			t.Errorf("%q: stdout %q, stderr %q: want only an error naming -url", args, out.String(), errOut.String())
		}
	}
}

// -publish-url: the events go in at one dispatcher and the listeners read
// them from another that relays it (UPSTREAM_URLS); every listener is owed
// every event accepted upstream.
func TestPublishURLRunsThroughARelay(t *testing.T) {
	up := startDispatcher(t, broadcast.Options{})
	port := freePort(t)
	startBinary(t, port, "UPSTREAM_URLS="+up.URL+"/events")
	ssetest.Eventually(t, 30*time.Second, "the relay follows the upstream", func() (bool, string) {
		h, _ := up.Health(t)
		return h.Listeners == 1, fmt.Sprintf("%+v", h)
	})
	rep, err := runJSON(t, guard(t), "-url", "http://127.0.0.1:"+port, "-publish-url", up.URL,
		"-listeners", "3", "-publishers", "2", "-events", "200", "-duration", "1m", "-settle", "30s")
	if err != nil || !rep.Check.Pass {
		t.Fatalf("a clean relay run failed its check: %v %+v", err, rep.Check)
	}
	if rep.PublishURL != up.URL || rep.Result.Posts.Accepted != 200 || rep.Result.Deliveries.Delivered != 600 {
		t.Errorf("publish_url %q, posts %+v, deliveries %+v", rep.PublishURL, rep.Result.Posts, rep.Result.Deliveries)
	}
	if h, _ := up.Health(t); h.EventsAccepted != 200 {
		t.Errorf("the upstream accepted %d events, want all 200", h.EventsAccepted)
	}
}

func TestRejectsOutOfBoundFlags(t *testing.T) {
	for _, extra := range [][]string{
		{"-duration", "11m"}, {"-duration", "0s"}, {"-publishers", "0"}, {"-rate", "-1"},
		{"-fixture", "nope"}, {"-find-max", "-factor", "1"}, {"-listeners", "-1"},
		{"-max-loss", "-1"}, {"-max-loss", "101"}, {"-max-loss", "NaN"}, {"-min-rate", "-1"}, {"-min-rate", "101"}, {"-min-rate", "NaN"}, {"-rate", "nan"}, {"-rate", "+Inf"},
		{"-find-max", "-factor", "NaN"}, {"-find-max", "-start-rate", "Inf"}, {"-scenario", "nope"}, {"-server-pid", "x"},
		{"-url", "http://127.0.0.1:2,ftp://x"}, {"-scenario", "storm", "-find-max"}, {"-publish-url", "127.0.0.1:3569"},
		{"-scenario", "storm", "-warmup", "10s", "-duration", "10s"}, {"-scenario", "storm", "-listeners", "0"},
		{"-scenario", "disconnect", "-listeners", "10", "-survivors", "10"},
		{"-scenario", "disconnect", "-listeners", "10", "-window", "1ms"},
		{"-scenario", "disconnect", "-listeners", "10", "-rss-after", "0s"},
	} {
		args := append([]string{"-url", "http://127.0.0.1:1"}, extra...)
		var errOut bytes.Buffer
		if err := runMain(context.Background(), args, io.Discard, &errOut, terminals{}); !errors.Is(err, errUsage) {
			t.Errorf("%q: err = %v, want a usage error", extra, err)
		}
	}
}

func TestInjectionIsValidJSON(t *testing.T) {
	fixtures := map[string][]byte{"empty": []byte("{}"), "spaced empty": []byte(" { \n } "), "one": []byte(`{"a":1}`)}
	for _, name := range fixtureNames() {
		for _, raw := range []bool{false, true} {
			b, err := loadFixture(name, raw)
			if err != nil {
				t.Fatal(err)
			}
			fixtures[fmt.Sprintf("%s raw=%v", name, raw)] = b
		}
	}
	for name, fixture := range fixtures {
		inj, err := newInjector(fixture)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		const seq, pub, sent = 18446744073709551615 >> 1, 31, 1763890123456789012
		body := inj.appendBody(nil, seq, pub, sent)
		if !json.Valid(body) || len(body) > inj.size() {
			t.Fatalf("%s: invalid or oversized body %s", name, body)
		}
		var got, orig map[string]any
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if err := dec.Decode(&got); err != nil {
			t.Fatal(err)
		}
		dec = json.NewDecoder(bytes.NewReader(fixture))
		dec.UseNumber()
		_ = dec.Decode(&orig)
		for k, want := range map[string]string{"lt_seq": fmt.Sprint(uint64(seq)), "lt_pub": "31", "lt_sent_ns": "1763890123456789012"} {
			if n, ok := got[k].(json.Number); !ok || n.String() != want {
				t.Errorf("%s: %s = %v, want %s", name, k, got[k], want)
			}
			delete(got, k)
		}
		if g, o := fmt.Sprint(got), fmt.Sprint(orig); g != o {
			t.Errorf("%s: the fixture's own members changed:\n got %s\nwant %s", name, g, o)
		}
		if !bytes.HasPrefix(bytes.TrimLeft(body, " \n"), []byte(`{"lt_seq":`)) {
			t.Errorf("%s: stamp is not the first member: %.60s", name, body)
		}
		st, ok := parseStamp(body)
		if !ok || st != (stamp{seq: seq, pub: pub, sentNS: sent}) {
			t.Errorf("%s: parseStamp = %+v, %v", name, st, ok)
		}
	}
	for _, bad := range []string{"[]", "{", "nope", ""} {
		if _, err := newInjector([]byte(bad)); err == nil {
			t.Errorf("newInjector(%q) accepted it", bad)
		}
	}
}

func TestParseStampTolerance(t *testing.T) {
	for data, want := range map[string]bool{
		`{"a":1,"lt_seq": 7,"lt_pub":2,"lt_sent_ns":-3}`:            true, // reordered, spaced, negative clock
		`{"lt_seq":7,"lt_pub":2}`:                                   false,
		`{"lt_seq":"7","lt_pub":2,"lt_sent_ns":3}`:                  false,
		`{"lt_seq":99999999999999999999,"lt_pub":2,"lt_sent_ns":3}`: false, // overflow
		`{"lt_seq":-1,"lt_pub":2,"lt_sent_ns":3}`:                   false,
	} {
		if _, ok := parseStamp([]byte(data)); ok != want {
			t.Errorf("parseStamp(%s) ok = %v, want %v", data, ok, want)
		}
	}
}

// faultyHub is a minimal broadcaster whose faults are chosen by the test:
// it loses some events, repeats others, splits every event over two data
// lines with CRLF line ends, and adds id, event and comment lines. The load
// tool must count exactly what it did.
type faultyHub struct {
	drop, dup, refuse func(seq uint64) bool
	delay             time.Duration         // before answering a POST
	hold              func(seq uint64) bool // sent after the next event instead
	mu                sync.Mutex
	subs              []chan []byte
	held              []byte
}

func (h *faultyHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		body, _ := io.ReadAll(r.Body)
		time.Sleep(h.delay)
		st, ok := parseStamp(body)
		if !ok {
			http.Error(w, "no stamp", http.StatusBadRequest)
			return
		}
		if h.refuse(st.seq) { // refused: must count as rejected, never as loss
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		h.mu.Lock()
		held := h.held
		h.held = nil
		if h.hold != nil && h.hold(st.seq) {
			h.held = body
		}
		for _, c := range h.subs {
			if h.held == nil && !h.drop(st.seq) {
				c <- body
			}
			if h.dup(st.seq) {
				c <- body
			}
			if held != nil {
				c <- held
			}
		}
		h.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		c := make(chan []byte, 10000)
		h.mu.Lock()
		h.subs = append(h.subs, c)
		h.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, ": hello\r\n\r\n")
		w.(http.Flusher).Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case b := <-c:
				cut := bytes.IndexByte(b, ',') + 1 // after "lt_seq":n,
				fmt.Fprintf(w, "id: 1\r\nevent: x\r\ndata:%s\r\n: note\r\ndata: %s\r\n\r\n", b[:cut], b[cut:])
				w.(http.Flusher).Flush()
			}
		}
	}
}

func TestCountsLossAndDuplicates(t *testing.T) {
	h := &faultyHub{
		drop:   func(seq uint64) bool { return seq%7 == 3 },
		dup:    func(seq uint64) bool { return seq%5 == 1 },
		refuse: func(seq uint64) bool { return seq%10 == 9 },
	}
	ts := httptest.NewServer(h)
	defer ts.Close()
	u, _ := url.Parse(ts.URL)
	cfg := config{
		URLs: []*url.URL{u}, IngestPath: "/metrics", StreamPath: "/event-dispatcher", Listeners: 3, Publishers: 2, Scenario: scenarioSteady,
		Duration: time.Minute, Events: 700, Fixture: "heartbeat", Settle: 5 * time.Second, // the dropped ones never come
		PostTimeout: 10 * time.Second, ConnectTimeout: 10 * time.Second,
	}
	rep, err := run(guard(t), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Of seqs 0..699, those ending in 9 are refused. An accepted event is
	// lost when dropped and not repeated; it is a duplicate when repeated
	// and not dropped; dropped and repeated, it arrives once.
	var accepted, lost, dups uint64
	for s := range uint64(700) {
		if s%10 == 9 {
			continue
		}
		accepted++
		drop, dup := h.drop(s), h.dup(s)
		if drop && !dup {
			lost++
		}
		if dup && !drop {
			dups++
		}
	}
	r := rep.Result
	if r.Posts.Accepted != accepted || r.Posts.Rejected != 700-accepted || r.Posts.ByStatus["503"] != 700-accepted {
		t.Errorf("posts = %+v, want %d accepted", r.Posts, accepted)
	}
	d := r.Deliveries
	if d.Expected != 3*accepted || d.Lost != 3*lost || d.Delivered != 3*(accepted-lost) {
		t.Errorf("deliveries = %+v, want %d lost of %d", d, 3*lost, 3*accepted)
	}
	if d.Duplicates != 3*dups || d.Foreign != 0 || d.Unexpected != 0 {
		t.Errorf("duplicates = %d (foreign %d, unexpected %d), want %d", d.Duplicates, d.Foreign, d.Unexpected, 3*dups)
	}
	if want := 100 * float64(lost) / float64(accepted); d.LossPct < want*0.999 || d.LossPct > want*1.001 {
		t.Errorf("loss = %.4f%%, want %.4f%%", d.LossPct, want)
	}
	// Both the loss and the 503s fail the check, each named.
	why := strings.Join(rep.Check.Failures, "; ")
	if rep.Check.Pass || !strings.Contains(why, "loss") || !strings.Contains(why, "failed POSTs") {
		t.Errorf("check = %+v, want failures for the loss and the 503s", rep.Check)
	}
}

// Duplicates and events overtaken by a later one of the same publisher
// fail the run, though nothing is lost.
func TestDuplicatesAndDisorderFail(t *testing.T) {
	never := func(uint64) bool { return false }
	h := &faultyHub{
		drop: never, refuse: never,
		dup:  func(seq uint64) bool { return seq%50 == 7 },
		hold: func(seq uint64) bool { return seq%20 == 4 },
	}
	ts := httptest.NewServer(h)
	defer ts.Close()
	rep, err := runJSON(t, guard(t), "-url", ts.URL, "-listeners", "3", "-publishers", "1", "-events", "200",
		"-fixture", "heartbeat", "-settle", "30s") // ends once all arrived
	d := rep.Result.Deliveries
	if d.Lost != 0 || d.Delivered != 600 || d.Duplicates != 3*4 || d.OutOfOrder != 3*10 {
		t.Errorf("deliveries = %+v, want 600 delivered, 12 duplicates, 30 out of order", d)
	}
	why := strings.Join(rep.Check.Failures, "; ")
	if err == nil || !strings.Contains(why, "12 duplicate and 30 out-of-order deliveries") {
		t.Errorf("err %v, check %+v: want a failure naming the duplicates and the disorder", err, rep.Check)
	}
	// Tolerated by -max-loss like the rest: 42 of 600 is 7 %.
	if rep, _ := runJSON(t, guard(t), "-url", ts.URL, "-listeners", "3", "-publishers", "1", "-events", "200",
		"-fixture", "heartbeat", "-settle", "30s", "-max-loss", "8"); !rep.Check.Pass {
		t.Errorf("-max-loss 8: check %+v, want a pass", rep.Check)
	}
}

// A server that answers every POST, slowly: nothing is lost, but the rate
// asked for was never applied, and the run says so and fails.
func TestSlowServerFailsTheRate(t *testing.T) {
	never := func(uint64) bool { return false }
	h := &faultyHub{drop: never, dup: never, refuse: never, delay: 300 * time.Millisecond}
	ts := httptest.NewServer(h)
	defer ts.Close()
	rep, err := runJSON(t, guard(t), "-url", ts.URL, "-listeners", "1", "-publishers", "8", "-rate", "100",
		"-duration", "1500ms", "-fixture", "heartbeat", "-settle", "1s")
	p := rep.Result
	if p.Deliveries.Lost != 0 || p.Posts.failed() != 0 || p.AchievedRate >= 90 {
		t.Fatalf("posts %+v, deliveries %+v, achieved %.0f/s: want a slow run with nothing lost", p.Posts, p.Deliveries, p.AchievedRate)
	}
	if why := strings.Join(rep.Check.Failures, "; "); err == nil || !strings.Contains(why, "under 90% of the -rate 100/s (-min-rate)") {
		t.Errorf("err %v, check %+v: want a failure naming the rate", err, rep.Check)
	}
	// -min-rate 0: the same slow run, nothing lost, passes.
	rep, err = runJSON(t, guard(t), "-url", ts.URL, "-listeners", "1", "-publishers", "8", "-rate", "100",
		"-duration", "1s", "-fixture", "heartbeat", "-settle", "30s", "-min-rate", "0")
	if err != nil || !rep.Check.Pass || rep.Result.AchievedRate >= 90 {
		t.Errorf("-min-rate 0: err %v, check %+v, achieved %.0f/s: want a slow run that passes", err, rep.Check, rep.Result.AchievedRate)
	}
}

func TestStalledListener(t *testing.T) {
	ts := startDispatcher(t, broadcast.Options{})
	hub := ts.Hub
	u, _ := url.Parse(ts.URL)
	target := endpoint(u, "/event-dispatcher")
	ctx := guard(t)
	s, err := openStalled(ctx, target, &tls.Config{}, 4096, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	// Subscribed (it counts as a listener) yet never read from.
	for hub.Stats().Listeners != 1 {
		if ctx.Err() != nil {
			t.Fatal("the stalled connection never became a listener")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s.dropped(100 * time.Millisecond) {
		t.Fatal("an open stream reported as dropped")
	}
	if err := hub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if !s.dropped(30 * time.Second) {
		t.Fatal("a stream the server ended is not reported as dropped")
	}
}

// A stalled connection the server refuses (503 over MAX_SUBSCRIBERS) is a
// failed listener, not one the server dropped as too slow.
func TestRefusedStalledListenerFails(t *testing.T) {
	ts := startDispatcher(t, broadcast.Options{MaxListeners: 1})
	u, _ := url.Parse(ts.URL)
	l, err := connectListener(guard(t), 0, 0, endpoint(u, "/events"), &tls.Config{}, 4096, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	go l.run()
	defer l.close()
	rep, err := runJSON(t, guard(t), "-url", ts.URL, "-listeners", "0", "-stall", "1", "-publishers", "1", "-events", "5")
	if err == nil || rep.Connect.FailedBy["HTTP 503"] != 1 || rep.Check.FailedListeners != 1 {
		t.Errorf("err %v, connect %+v, check %+v: want the refused stalled connection counted as a failed listener", err, rep.Connect, rep.Check)
	}
	if s := rep.Stalled; s != nil && (s.Opened != 0 || s.DroppedByServer != 0) {
		t.Errorf("stalled = %+v, want none opened or dropped", s)
	}
}

func TestVerdict(t *testing.T) {
	ok := phaseReport{TargetRate: 100, AchievedRate: 95, Latency: latencySummary{P99MS: 1000}}
	if v := ok.verdict(); v != "" {
		t.Errorf("a passing step failed: %s", v)
	}
	for name, p := range map[string]phaseReport{
		"loss":      {Deliveries: deliveries{LossPct: 0.11}},
		"p99":       {Latency: latencySummary{P99MS: 1001}},
		"duplicate": {Deliveries: deliveries{Duplicates: 1}},
		"disorder":  {Deliveries: deliveries{OutOfOrder: 1}},
		"rejected":  {Posts: postReport{Rejected: 1}},
		"errors":    {Posts: postReport{TransportErrors: 1}},
		"listeners": {Listeners: phaseListeners{Lost: 1}},
		"rate":      {TargetRate: 100, AchievedRate: 89},
	} {
		if p.verdict() == "" {
			t.Errorf("%s: a failing step passed", name)
		}
	}
}

func TestHistogram(t *testing.T) {
	for v := int64(0); v < 1<<40; v = v*5/4 + 1 {
		b := bucketOf(v)
		hi := bucketHigh(b)
		if hi < v || (b > 0 && bucketHigh(b-1) >= v) || hi-v > v/16 {
			t.Fatalf("value %d: bucket %d holds up to %d, previous up to %d", v, b, hi, bucketHigh(b-1))
		}
	}
	if bucketOf(1<<62) >= numBuckets || bucketOf(-5) != 0 {
		t.Fatal("bucket out of range")
	}
	h := newShardedHistogram(3)
	var sum int64
	for i := range int64(1000) {
		v := (i + 1) * int64(time.Millisecond)
		h.shard(int(i)).record(v)
		sum += v
	}
	s := h.summary(1000*int64(time.Millisecond), sum)
	for _, c := range []struct{ got, want float64 }{{s.P50MS, 500}, {s.P90MS, 900}, {s.P99MS, 990}, {s.MaxMS, 1000}, {s.MeanMS, 500.5}} {
		if c.got < c.want || c.got > c.want*1.0625 {
			t.Errorf("summary %+v: %v, want %v (+6.25%%)", s, c.got, c.want)
		}
	}
	if s.Count != 1000 {
		t.Errorf("count = %d", s.Count)
	}
}

func TestProc(t *testing.T) {
	s, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSSKB <= 0 || s.CPU < 0 {
		t.Errorf("own process: %+v", s)
	}
	cpu, err := parseStatCPU([]byte("42 (a) b (c) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0"))
	if err != nil || cpu != 4*time.Second {
		t.Errorf("command name with parentheses and spaces: %v, %v", cpu, err)
	}
	if _, err := readProc(1 << 30); err == nil {
		t.Error("no error for a process that does not exist")
	}
	netstat := "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 3 169 171\nIpExt: InNoRoutes\nIpExt: 0\n"
	if n, err := parseListenOverflows([]byte(netstat)); err != nil || n != 169 {
		t.Errorf("ListenOverflows = %d, %v; want 169", n, err)
	}
	if _, err := parseListenOverflows([]byte("IpExt: InNoRoutes\nIpExt: 0\n")); err == nil {
		t.Error("no error for a netstat without TcpExt")
	}
}
