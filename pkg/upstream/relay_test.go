package upstream_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/publish"
	"event-dispatcher/pkg/server"
	"event-dispatcher/pkg/upstream"
)

// sink keeps what the publish path handed on, in order.
type sink struct {
	mu  sync.Mutex
	got []string
}

func (s *sink) Put(data []byte) {
	s.mu.Lock()
	s.got = append(s.got, string(data))
	s.mu.Unlock()
}

func (s *sink) events() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

// logBuf is a zerolog writer safe for concurrent use.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// fast are Options with every wait in milliseconds.
func fast(urls ...string) upstream.Options {
	return upstream.Options{
		URLs: urls, MinRetry: 5 * time.Millisecond, Backoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		ClientErrorDelay: 200 * time.Millisecond, IdleTimeout: 5 * time.Second, MaxEventBytes: 1024,
	}
}

// relay starts a relay into a real hub and publish path, and returns what
// the path handed on. It is closed at cleanup.
func relay(t *testing.T, opts upstream.Options) (*upstream.Relay, *sink, *logBuf) {
	t.Helper()
	hub, err := broadcast.New(broadcast.Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := &sink{}
	logs := &logBuf{}
	opts.Logger = zerolog.New(logs)
	path := publish.New(publish.Options{Hub: hub, Sinks: []publish.Sink{out}})
	r, err := upstream.New(opts, path.Door("upstream"))
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(func() {
		r.Close()
		_ = hub.Close(context.Background())
	})
	return r, out, logs
}

// request is what the upstream saw of one connection.
type request struct {
	header http.Header
	at     time.Time
}

// feedServer is an SSE upstream whose n-th connection (from 0) is served
// by script(n, w, r); it records every request.
type feedServer struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []request
}

func newFeed(t *testing.T, script func(n int, w http.ResponseWriter, r *http.Request)) *feedServer {
	f := &feedServer{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		n := len(f.reqs)
		f.reqs = append(f.reqs, request{r.Header.Clone(), time.Now()})
		f.mu.Unlock()
		script(n, w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *feedServer) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.reqs...)
}

// stream starts an SSE answer.
func stream(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
}

// wikimedia writes one event as stream.wikimedia.org does: event: message,
// a Kafka position as id, the JSON spread over several data: lines.
func wikimedia(w http.ResponseWriter, seq int) {
	fmt.Fprintf(w, "event: message\nid: [{\"topic\":\"eqiad.mediawiki.recentchange\",\"partition\":0,\"timestamp\":%d}]\n", 1700000000000+seq)
	fmt.Fprintf(w, "data: {\"$schema\":\"/mediawiki/recentchange/1.0.0\",\ndata:  \"seq\": %d,\ndata: \"title\":\"Ünïcode\"}\n\n", seq)
	w.(http.Flusher).Flush()
}

func wikimediaID(seq int) string {
	return fmt.Sprintf(`[{"topic":"eqiad.mediawiki.recentchange","partition":0,"timestamp":%d}]`, 1700000000000+seq)
}

func wikimediaEvent(seq int) string {
	return fmt.Sprintf(`{"$schema":"/mediawiki/recentchange/1.0.0","seq":%d,"title":"Ünïcode"}`, seq)
}

func waitEvents(t *testing.T, s *sink, n int) []string {
	t.Helper()
	ssetest.Eventually(t, 30*time.Second, fmt.Sprintf("%d events relayed", n), func() (bool, string) {
		got := s.events()
		return len(got) >= n, fmt.Sprint(got)
	})
	return s.events()
}

func wantEvents(t *testing.T, got []string, seqs ...int) {
	t.Helper()
	want := make([]string, len(seqs))
	for i, s := range seqs {
		want[i] = wikimediaEvent(s)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("relayed\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestWikimediaFeedIsRelayedWithItsHeaders(t *testing.T) {
	f := newFeed(t, func(n int, w http.ResponseWriter, r *http.Request) {
		stream(w)
		wikimedia(w, 1)
		fmt.Fprint(w, "event: log\ndata: {\"other\":1}\n\n") // not a wanted type
		wikimedia(w, 2)
		<-r.Context().Done()
	})
	opts := fast(f.URL + "/v2/stream/recentchange")
	opts.EventTypes = []string{"message"}
	opts.UserAgent = "relay-test/1.0 (ops@example.org)"
	opts.Header = http.Header{"X-Api-Key": {"k1"}}
	r, out, _ := relay(t, opts)
	wantEvents(t, waitEvents(t, out, 2), 1, 2)
	h := f.requests()[0].header
	for name, want := range map[string]string{
		"User-Agent": "relay-test/1.0 (ops@example.org)", "Accept": "text/event-stream", "X-Api-Key": "k1", "Last-Event-Id": "",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("request header %s = %q, want %q", name, got, want)
		}
	}
	ssetest.Eventually(t, 10*time.Second, "skipped counted", func() (bool, string) {
		st := r.Stats()[0]
		return st.Skipped == 1 && st.Events == 2 && st.State == "connected" && st.LastEvent != "", fmt.Sprintf("%+v", st)
	})
}

func TestReconnectsResumeFromTheLastEventID(t *testing.T) {
	// Each connection ends differently; every next one must carry the id
	// of the last event taken, and nothing is taken twice.
	f := newFeed(t, func(n int, w http.ResponseWriter, r *http.Request) {
		switch n {
		case 0: // two events, then a clean end
			stream(w)
			wikimedia(w, 1)
			wikimedia(w, 2)
		case 1:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
		case 2: // one event, then the connection is cut mid-event
			stream(w)
			wikimedia(w, 3)
			fmt.Fprint(w, "event: message\nid: never-finished\ndata: {\"seq\":")
			w.(http.Flusher).Flush()
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = conn.Close()
			}
		case 3:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			stream(w)
			wikimedia(w, 4)
			<-r.Context().Done()
		}
	})
	r, out, _ := relay(t, fast(f.URL))
	wantEvents(t, waitEvents(t, out, 4), 1, 2, 3, 4)
	reqs := f.requests()
	wantIDs := []string{"", wikimediaID(2), wikimediaID(2), wikimediaID(3), wikimediaID(3)}
	for i, want := range wantIDs {
		if got := reqs[i].header.Get("Last-Event-ID"); got != want {
			t.Errorf("connection %d sent Last-Event-ID %q, want %q", i, got, want)
		}
	}
	// Retry-After: 1 is a floor the relay must respect.
	for _, i := range []int{2, 4} {
		if gap := reqs[i].at.Sub(reqs[i-1].at); gap < time.Second {
			t.Errorf("connection %d came %s after a Retry-After: 1", i, gap)
		}
	}
	if st := r.Stats()[0]; st.Reconnects != 4 {
		t.Errorf("reconnects %d, want 4", st.Reconnects)
	}
}

func TestNonJSONAndOversizedAreCountedNotDelivered(t *testing.T) {
	f := newFeed(t, func(n int, w http.ResponseWriter, r *http.Request) {
		stream(w)
		fmt.Fprint(w, "data: not json\n\n")
		fmt.Fprint(w, "data: [1,2]\n\n")
		fmt.Fprint(w, "data: {\"s\":\"\xff\xfe\"}\n\n")                        // invalid UTF-8
		fmt.Fprint(w, "data: {\"n\":1e400}\n\n")                               // not I-JSON
		fmt.Fprint(w, "data: {\"big\":\""+strings.Repeat("x", 4096)+"\"}\n\n") // beyond MaxEventBytes
		wikimedia(w, 1)
		<-r.Context().Done()
	})
	r, out, logs := relay(t, fast(f.URL))
	wantEvents(t, waitEvents(t, out, 1), 1)
	st := r.Stats()[0]
	if st.DroppedInvalid != 4 || st.DroppedTooLarge != 1 || st.Dropped != 5 || st.Events != 1 {
		t.Errorf("stats %+v, want 4 invalid, 1 too large, 1 taken", st)
	}
	if n := strings.Count(logs.String(), "upstream events dropped"); n != 1 {
		t.Errorf("%d log lines about dropped events, want 1 (at most one a minute)", n)
	}
}

func TestSilentUpstreamIsAbandonedByTheWatchdog(t *testing.T) {
	f := newFeed(t, func(n int, w http.ResponseWriter, r *http.Request) {
		stream(w)
		wikimedia(w, n+1)
		<-r.Context().Done() // then nothing, not even a heartbeat
	})
	opts := fast(f.URL)
	opts.IdleTimeout = 100 * time.Millisecond
	r, out, _ := relay(t, opts)
	wantEvents(t, waitEvents(t, out, 3)[:3], 1, 2, 3)
	if got := f.requests()[1].header.Get("Last-Event-ID"); got != wikimediaID(1) {
		t.Errorf("after the watchdog: Last-Event-ID %q", got)
	}
	if st := r.Stats()[0]; !strings.Contains(st.LastError, "idle watchdog") {
		t.Errorf("last error %q does not name the watchdog", st.LastError)
	}
}

func TestClientErrorsAreRetriedSlowlyAndLoudly(t *testing.T) {
	f := newFeed(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n < 2 {
			http.Error(w, "no such stream", http.StatusNotFound)
			return
		}
		stream(w)
		wikimedia(w, 1)
		<-r.Context().Done()
	})
	_, out, logs := relay(t, fast(f.URL))
	waitEvents(t, out, 1)
	reqs := f.requests()
	for i := 1; i < 3; i++ {
		if gap := reqs[i].at.Sub(reqs[i-1].at); gap < 200*time.Millisecond {
			t.Errorf("retry %d after a 404 came after %s, before ClientErrorDelay", i, gap)
		}
	}
	if !strings.Contains(logs.String(), `"level":"error"`) || !strings.Contains(logs.String(), "404") {
		t.Errorf("a 404 was not logged as an error:\n%s", logs)
	}
}

func TestRetryZeroIsNoTightLoop(t *testing.T) {
	f := newFeed(t, func(n int, w http.ResponseWriter, r *http.Request) {
		stream(w)
		fmt.Fprint(w, "retry: 0\n\n")
		if n%2 == 1 {
			wikimedia(w, n) // a connection that carries events resets the backoff
		}
	})
	opts := fast(f.URL)
	opts.MinRetry = 20 * time.Millisecond
	relay(t, opts)
	ssetest.Eventually(t, 30*time.Second, "ten connections", func() (bool, string) {
		return len(f.requests()) >= 10, fmt.Sprint(len(f.requests()))
	})
	reqs := f.requests()
	for i := 1; i < len(reqs); i++ {
		if gap := reqs[i].at.Sub(reqs[i-1].at); gap < opts.MinRetry {
			t.Errorf("connection %d came %s after the previous one, below the %s floor", i, gap, opts.MinRetry)
		}
	}
}

func TestRedirectLoopIsBoundedAndRetried(t *testing.T) {
	var f *feedServer
	f = newFeed(t, func(n int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, f.URL+"/loop", http.StatusFound)
	})
	opts := fast(f.URL)
	opts.MaxRedirects = 3
	r, _, _ := relay(t, opts)
	ssetest.Eventually(t, 30*time.Second, "two attempts", func() (bool, string) {
		st := r.Stats()[0]
		return st.Reconnects >= 2, fmt.Sprintf("%+v", st)
	})
	if st := r.Stats()[0]; !strings.Contains(st.LastError, "redirects") {
		t.Errorf("last error %q", st.LastError)
	}
	// Each attempt is the request and 3 redirects, never more.
	if n, st := len(f.requests()), r.Stats()[0]; n > 4*int(st.Reconnects+1) {
		t.Errorf("%d requests for %d attempts", n, st.Reconnects+1)
	}
}

func TestRelaysAnotherDispatcherInOrder(t *testing.T) {
	up := ssetest.Start(t, broadcast.Options{Heartbeat: 20 * time.Millisecond}, server.Options{})
	r, out, _ := relay(t, fast(up.URL+"/events"))
	ssetest.Eventually(t, 30*time.Second, "relay connected", func() (bool, string) {
		h, _ := up.Health(t)
		return h.Listeners == 1 && r.Stats()[0].Connected(), fmt.Sprintf("%+v", r.Stats()[0])
	})
	const n = 50
	want := make([]string, n)
	for i := range n {
		want[i] = fmt.Sprintf(`{"seq":%d}`, i)
		up.Publish(t, []byte(fmt.Sprintf(`{ "seq": %d }`, i)))
	}
	got := waitEvents(t, out, n)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("relayed %q", got)
	}
	if st := r.Stats()[0]; st.Dropped != 0 || st.Skipped != 0 {
		t.Errorf("the preamble or heartbeats counted as events: %+v", st)
	}
}

func TestCloseEndsEveryConnection(t *testing.T) {
	f := newFeed(t, func(n int, w http.ResponseWriter, r *http.Request) {
		stream(w)
		<-r.Context().Done()
	})
	r, _, _ := relay(t, fast(f.URL, f.URL+"/second"))
	ssetest.Eventually(t, 30*time.Second, "both connected", func() (bool, string) {
		st := r.Stats()
		return st[0].Connected() && st[1].Connected(), fmt.Sprintf("%+v", st)
	})
	r.Close()
	for i, st := range r.Stats() {
		if st.State != "stopped" {
			t.Errorf("upstream %d: %s after Close", i, st.State)
		}
	}
	f.CloseClientConnections()
}

func TestHeadersStayWithTheirHostAcrossRedirects(t *testing.T) {
	other := newFeed(t, func(n int, w http.ResponseWriter, r *http.Request) {
		stream(w)
		wikimedia(w, 1)
		<-r.Context().Done()
	})
	first := newFeed(t, func(n int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/moved", http.StatusTemporaryRedirect)
	})
	opts := fast(first.URL)
	opts.Header = http.Header{"X-Api-Key": {"k1"}}
	_, out, _ := relay(t, opts)
	wantEvents(t, waitEvents(t, out, 1), 1)
	if got := first.requests()[0].header.Get("X-Api-Key"); got != "k1" {
		t.Errorf("the configured host got X-Api-Key %q", got)
	}
	h := other.requests()[0].header
	if got := h.Get("X-Api-Key"); got != "" {
		t.Errorf("another host got the API key %q", got)
	}
	if h.Get("User-Agent") != "event-dispatcher" || h.Get("Accept") != "text/event-stream" {
		t.Errorf("the redirected request lost the relay's own headers: %v", h)
	}
}

// A redirect from https to http on the same host name (ports 443 and 80,
// both implicit) would send the API key in clear: it must not carry it.
func TestHeadersNeverFollowADowngradeToPlainHTTP(t *testing.T) {
	plain := newFeed(t, func(n int, w http.ResponseWriter, r *http.Request) {
		stream(w)
		wikimedia(w, 1)
		<-r.Context().Done()
	})
	var secure *feedServer
	secure = &feedServer{}
	secure.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secure.mu.Lock()
		secure.reqs = append(secure.reqs, request{r.Header.Clone(), time.Now()})
		secure.mu.Unlock()
		http.Redirect(w, r, "http://example.com/moved", http.StatusFound)
	}))
	t.Cleanup(secure.Close)
	// example.com (in the test certificate) resolves to the TLS server on
	// port 443 and to the plain one on port 80.
	tr := secure.Client().Transport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		to := map[string]string{"example.com:443": secure.Listener.Addr().String(), "example.com:80": plain.Listener.Addr().String()}[addr]
		return (&net.Dialer{}).DialContext(ctx, network, to)
	}
	opts := fast("https://example.com/feed")
	opts.Transport = tr
	opts.Header = http.Header{"X-Api-Key": {"k1"}, "Authorization": {"Bearer t1"}}
	_, out, _ := relay(t, opts)
	wantEvents(t, waitEvents(t, out, 1), 1)
	if got := secure.requests()[0].header.Get("X-Api-Key"); got != "k1" {
		t.Errorf("the configured https URL got X-Api-Key %q", got)
	}
	h := plain.requests()[0].header
	for _, name := range []string{"X-Api-Key", "Authorization"} {
		if got := h.Get(name); got != "" {
			t.Errorf("the plain http redirect target got %s %q", name, got)
		}
	}
}
