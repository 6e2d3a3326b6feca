package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/access"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/clientip"
	"event-dispatcher/pkg/server"
)

// retryHintBytes is what every stream gets first: a byte order mark and
// "retry: NNNN\n\n", a delay of 1000-2999 ms.
const retryHintBytes = len("\ufeffretry: 1000\n\n")

// records returns the JSON log lines whose message is msg.
func (b *lockedBuffer) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(b.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["message"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// delta is what each series moved by between two scrapes.
func delta(before, after ssetest.Metrics) map[string]float64 {
	d := map[string]float64{}
	for k, v := range after.Samples {
		d[k] = v - before.Samples[k]
	}
	return d
}

// wantSeries checks that each series moved by exactly the given amount.
func wantSeries(t *testing.T, d map[string]float64, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		if got, ok := d[k]; !ok || got != v {
			t.Errorf("%s moved by %v (exported: %v), want %v", k, got, ok, v)
		}
	}
}

// Real traffic against a real server, then a scrape of its admin port:
// every counter moves by exactly what was done, and the stream-end log line
// names the client behind the proxy.
func TestMetricsCountExactlyWhatHappened(t *testing.T) {
	t.Parallel()
	const listeners, maxBody, readTimeout = 3, 2048, time.Second
	logs := &lockedBuffer{}
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{
		Logger:       zerolog.New(logs).Level(zerolog.InfoLevel),
		AllowOrigins: []string{"https://player.example"},
		MaxBodyBytes: maxBody, BodyReadTimeout: readTimeout,
		ClientIP: clientip.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}),
	})
	before := ssetest.Scrape(t, srv.Admin+"/metrics")

	proxied := http.Header{"X-Forwarded-For": {"203.0.113.7"}}
	streams := make([]*ssetest.Stream, listeners)
	for i := range streams {
		streams[i] = ssetest.Subscribe(t, srv.Client, srv.URL+"/events", proxied)
	}

	// Accepted: every valid fixture, each delivered to every listener.
	var sizes, frames int
	valid := loadValid(t)
	for _, f := range valid {
		srv.Publish(t, f)
		sizes += len(compact(t, f))
		frames += len("data: ") + len(compact(t, f)) + len("\n\n")
	}
	for _, s := range streams {
		for range valid {
			s.NextData(t, within(t, 10*time.Second))
		}
	}

	// Refused, by reason.
	big := []byte(`{"k":"` + strings.Repeat("x", maxBody) + `"}`)
	for _, r := range []struct {
		body    []byte
		chunked bool
		status  int
	}{
		{big, false, http.StatusRequestEntityTooLarge},
		{big, true, http.StatusRequestEntityTooLarge},
		{[]byte(`nope`), false, http.StatusBadRequest},
		{[]byte(`[]`), true, http.StatusBadRequest},
		{ssetest.Fixture(t, "start-invalid-trailing-comma.json"), false, http.StatusBadRequest},
	} {
		if got := post(t, srv, "/api/events", r.body, r.chunked); got.Status != r.status {
			t.Fatalf("POST %.20q: status %d, want %d", r.body, got.Status, r.status)
		}
	}
	evil := http.Header{"Origin": {"https://evil.example"}}
	for _, m := range []string{http.MethodPost, http.MethodPost, http.MethodGet} { // the GET is no event refused
		path := map[string]string{http.MethodPost: "/api/events", http.MethodGet: "/events"}[m]
		r, err := srv.Do(within(t, 10*time.Second), m, path, evil, []byte(`{}`))
		if err != nil || r.Status != http.StatusForbidden {
			t.Fatalf("%s %s from another origin: %v, status %d, want 403", m, path, err, r.Status)
		}
	}
	postIncompleteBody(t, srv)

	d := delta(before, ssetest.Scrape(t, srv.Admin+"/metrics"))
	wantSeries(t, d, map[string]float64{
		"event_dispatcher_events_accepted_total":                           float64(len(valid)),
		`event_dispatcher_events_rejected_total{reason="too_large"}`:       2,
		`event_dispatcher_events_rejected_total{reason="invalid"}`:         3,
		`event_dispatcher_events_rejected_total{reason="timeout"}`:         1,
		`event_dispatcher_events_rejected_total{reason="forbidden"}`:       2,
		`event_dispatcher_events_rejected_total{reason="busy"}`:            0,
		`event_dispatcher_events_rejected_total{reason="rate_limited"}`:    0,
		`event_dispatcher_listeners_dropped_total{reason="slow"}`:          0,
		`event_dispatcher_listeners_dropped_total{reason="stalled"}`:       0,
		"event_dispatcher_listeners":                                       listeners,
		"event_dispatcher_event_size_bytes_count":                          float64(len(valid)),
		"event_dispatcher_event_size_bytes_sum":                            float64(sizes),
		"event_dispatcher_stream_duration_seconds_count":                   0,
		"event_dispatcher_broker_connected":                                0,
		"event_dispatcher_broker_messages_received_total":                  0,
		"event_dispatcher_broker_publish_errors_total":                     0,
		"event_dispatcher_broker_reconnects_total":                         0,
		`event_dispatcher_broker_messages_dropped_total{reason="busy"}`:    0,
		`event_dispatcher_broker_messages_dropped_total{reason="client"}`:  0,
		`event_dispatcher_broker_messages_dropped_total{reason="invalid"}`: 0,
		`event_dispatcher_broker_messages_dropped_total{reason="foreign"}`: 0,
		"event_dispatcher_draining":                                        0,
		"event_dispatcher_fanout_stalled":                                  0,
	})
	// A listener's counts land when its write returns, maybe just after
	// the client read the bytes.
	ssetest.Eventually(t, 10*time.Second, "deliveries and bytes counted", func() (bool, string) {
		d := delta(before, ssetest.Scrape(t, srv.Admin+"/metrics"))
		got := [2]float64{d["event_dispatcher_deliveries_total"], d["event_dispatcher_sent_bytes_total"]}
		want := [2]float64{float64(listeners * len(valid)), float64(listeners * (retryHintBytes + frames))}
		return got == want, fmt.Sprintf("deliveries, bytes = %v, want %v", got, want)
	})
	if h, _ := srv.Health(t); h.EventsRejected != 8 {
		t.Errorf("/health events_rejected %d, want the 8 refused with a 4xx", h.EventsRejected)
	}

	// Shutting down: POSTs are refused as busy, every stream ends and is
	// timed, and logged with the client's own address.
	srv.Server.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Hub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if r := post(t, srv, "/api/events", []byte(`{}`), false); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("POST after close: status %d, want 503", r.Status)
	}
	ssetest.Eventually(t, 10*time.Second, "every stream ended", func() (bool, string) {
		d := delta(before, ssetest.Scrape(t, srv.Admin+"/metrics"))
		return d["event_dispatcher_stream_duration_seconds_count"] == listeners, fmt.Sprint(d["event_dispatcher_stream_duration_seconds_count"])
	})
	d = delta(before, ssetest.Scrape(t, srv.Admin+"/metrics"))
	wantSeries(t, d, map[string]float64{
		`event_dispatcher_events_rejected_total{reason="busy"}`: 1,
		"event_dispatcher_listeners":                            0,
		"event_dispatcher_draining":                             1,
		// The final ": end" comments are written but are no events.
		"event_dispatcher_deliveries_total": float64(listeners * len(valid)),
	})
	ended := logs.records(t, "listener disconnected")
	if len(ended) != listeners {
		t.Fatalf("%d stream-end lines, want %d", len(ended), listeners)
	}
	for _, rec := range ended {
		if rec["client_ip"] != "203.0.113.7" || rec["events"] != float64(len(valid)) || rec["reason"] != broadcast.ErrShutdown.Error() {
			t.Errorf("stream-end line %v: want client_ip 203.0.113.7 (not the proxy's), events %d, reason %q", rec, len(valid), broadcast.ErrShutdown)
		}
		if b, _ := rec["bytes"].(float64); b <= float64(retryHintBytes+frames) {
			t.Errorf("stream-end line %v: bytes %v, want more than %d (the opening retry field, the frames and the closing comment)", rec, b, retryHintBytes+frames)
		}
		if s, ok := rec["duration_s"].(float64); !ok || s < 0 {
			t.Errorf("stream-end line %v: no duration_s", rec)
		}
	}
}

// postIncompleteBody announces a body it never finishes: 408 once
// BodyReadTimeout has passed, or the connection cut.
func postIncompleteBody(t *testing.T, srv *ssetest.Server) {
	t.Helper()
	conn := srv.Dial(t)
	if _, err := io.WriteString(conn, "POST /api/events HTTP/1.1\r\nHost: dispatcher\r\nContent-Length: 64\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // a guard against a hang only
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		if !isConnCut(err) {
			t.Fatalf("want 408 or the connection cut, got %v", err)
		}
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("incomplete body: status %d, want 408", resp.StatusCode)
	}
}

// Listeners dropped as too slow are counted as such, and logged as
// dropped with their client address.
func TestMetricsCountDroppedListenersByReason(t *testing.T) {
	t.Parallel()
	const dropped = 2
	logs := &lockedBuffer{}
	// A listener queue smaller than one event: the configuration refuses
	// it, the hub drops every listener as too slow on that event.
	srv := ssetest.Start(t, broadcast.Options{BufferBytes: 4096}, server.Options{Logger: zerolog.New(logs)})
	before := ssetest.Scrape(t, srv.Admin+"/metrics")
	streams := make([]*ssetest.Stream, dropped)
	for i := range streams {
		streams[i] = ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	}
	srv.Publish(t, []byte(`{"pad":"`+strings.Repeat("p", 8<<10)+`"}`))
	for i, s := range streams {
		if ev, err := s.Next(within(t, 10*time.Second)); err == nil {
			t.Fatalf("listener %d got %.40q, want its stream cut", i, ev.Raw)
		}
	}
	ssetest.Eventually(t, 10*time.Second, "drops counted", func() (bool, string) {
		d := delta(before, ssetest.Scrape(t, srv.Admin+"/metrics"))
		return d[`event_dispatcher_listeners_dropped_total{reason="slow"}`] == dropped, fmt.Sprint(d)
	})
	wantSeries(t, delta(before, ssetest.Scrape(t, srv.Admin+"/metrics")), map[string]float64{
		`event_dispatcher_listeners_dropped_total{reason="stalled"}`: 0,
		"event_dispatcher_deliveries_total":                          0,
		"event_dispatcher_listeners":                                 0,
		"event_dispatcher_stream_duration_seconds_count":             dropped,
	})
	recs := logs.records(t, "listener dropped")
	if len(recs) != dropped {
		t.Fatalf("%d 'listener dropped' lines, want %d", len(recs), dropped)
	}
	for _, rec := range recs {
		if rec["level"] != "warn" || rec["reason"] != broadcast.ErrSlow.Error() || rec["client_ip"] != "127.0.0.1" {
			t.Errorf("drop line %v: want warn, reason %q, client_ip 127.0.0.1", rec, broadcast.ErrSlow)
		}
	}
}

// POSTs over PUBLISH_RATE_PER_IP are counted as rate_limited, and only those.
func TestMetricsCountRateLimitedPosts(t *testing.T) {
	t.Parallel()
	const refused = 3
	// A rate so low that only the burst of one gets through.
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{Access: access.Policy{Publish: access.NewRateLimiter(1e-9, 0)}})
	before := ssetest.Scrape(t, srv.Admin+"/metrics")
	srv.Publish(t, ssetest.Fixture(t, "stop.json"))
	for range refused {
		if r := post(t, srv, "/api/events", ssetest.Fixture(t, "stop.json"), false); r.Status != http.StatusTooManyRequests {
			t.Fatalf("POST over the rate: status %d, want 429", r.Status)
		}
	}
	wantSeries(t, delta(before, ssetest.Scrape(t, srv.Admin+"/metrics")), map[string]float64{
		"event_dispatcher_events_accepted_total":                        1,
		`event_dispatcher_events_rejected_total{reason="rate_limited"}`: refused,
		`event_dispatcher_events_rejected_total{reason="invalid"}`:      0,
	})
}

// A listener that stops reading halfway through a long backlog is dropped
// as stalled. Everything its socket took before the write that stalled was
// received, and counted: the delivery count matches the events the client
// reads afterwards, give or take the frames of that one write.
func TestMetricsCountWhatAStalledListenerReceived(t *testing.T) {
	t.Parallel()
	const events, size = 4000, 4 << 10                                                                                                   // 16 MB: far more than the sockets' buffers hold
	srv := ssetest.Start(t, broadcast.Options{WriteTimeout: 10 * time.Second, BufferBytes: 32 << 20, QueueSize: 4096}, server.Options{}) // a loaded machine may read 8 MB slowly
	before := ssetest.Scrape(t, srv.Admin+"/metrics")

	// A small receive buffer, so that what the kernel holds for the client
	// is small next to the backlog.
	conn := dialSmallReceiveBuffer(t, srv.Addr)
	_ = conn.SetDeadline(time.Now().Add(time.Minute)) // a guard against a hang only
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/events", nil)
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	body := bufio.NewReader(resp.Body) // de-chunked
	// The retry field and its blank line: subscribed.
	for range 2 {
		if _, err := body.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}

	// The backlog builds up while the client reads nothing; the listener's
	// writer is blocked on the full socket in the middle of one batch.
	event := []byte(`{"pad":"` + strings.Repeat("p", size-len(`{"pad":""}`)) + `"}`)
	for i := range events {
		if err := srv.Hub.Publish(event); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	// The client reads half of it, then stops: the write under way stalls.
	half := make([]byte, events*size/2)
	if _, err := io.ReadFull(body, half); err != nil {
		t.Fatal(err)
	}
	ssetest.Eventually(t, 30*time.Second, "the listener dropped as stalled", func() (bool, string) {
		d := delta(before, ssetest.Scrape(t, srv.Admin+"/metrics"))
		return d[`event_dispatcher_listeners_dropped_total{reason="stalled"}`] == 1, fmt.Sprint(d)
	})
	rest, _ := io.ReadAll(body) // what the sockets still held, up to the cut
	all := append(half, rest...)
	received := 0
	frames := bytes.Split(all, []byte("\n\n"))
	for _, f := range frames[:len(frames)-1] { // the last one is cut short, or empty
		if bytes.Equal(f, append([]byte("data: "), event...)) {
			received++
		}
	}
	counted := int(delta(before, ssetest.Scrape(t, srv.Admin+"/metrics"))["event_dispatcher_deliveries_total"])
	const oneWrite = 16<<10/size + 1 // the write that stalled: 16 KiB, plus the frame that crossed it
	if counted > received || received-counted > oneWrite {
		t.Errorf("the client received %d events, %d counted as delivered; want at most %d fewer (the one write that stalled)", received, counted, oneWrite)
	}
	if received >= events {
		t.Errorf("the client received all %d events: the test did not stall it", events)
	}
}

// Streams refused before they start are counted by reason, so hitting the
// listener cap can be alerted on.
func TestMetricsCountRefusedListeners(t *testing.T) {
	t.Parallel()
	const token = "0123456789abcdefXYZ"
	srv := ssetest.Start(t, broadcast.Options{MaxListeners: 2}, server.Options{
		ClientIP: clientip.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}),
		Access: access.Policy{
			Listeners: access.NewAuth([]string{token}, nil),
			Streams:   access.NewStreamLimiter(1),
		},
	})
	from := func(ip string) http.Header {
		return http.Header{"Authorization": {"Bearer " + token}, "X-Forwarded-For": {ip}}
	}
	refusedWith := func(path string, header http.Header, status int) {
		t.Helper()
		r, err := srv.Do(within(t, 10*time.Second), http.MethodGet, path, header, nil)
		if err != nil || r.Status != status {
			t.Fatalf("GET %s: %d %v, want %d", path, r.Status, err, status)
		}
	}
	before := ssetest.Scrape(t, srv.Admin+"/metrics")
	refusedWith("/events", nil, http.StatusUnauthorized)
	refusedWith("/events?session_id=", from("203.0.113.1"), http.StatusBadRequest)
	ssetest.Subscribe(t, srv.Client, srv.URL+"/events", from("203.0.113.1"))
	refusedWith("/events", from("203.0.113.1"), http.StatusTooManyRequests)
	ssetest.Subscribe(t, srv.Client, srv.URL+"/events", from("203.0.113.2"))
	refusedWith("/events", from("203.0.113.3"), http.StatusServiceUnavailable)
	wantSeries(t, delta(before, ssetest.Scrape(t, srv.Admin+"/metrics")), map[string]float64{
		`event_dispatcher_listeners_refused_total{reason="unauthorized"}`: 1,
		`event_dispatcher_listeners_refused_total{reason="invalid"}`:      1,
		`event_dispatcher_listeners_refused_total{reason="rate_limited"}`: 1,
		`event_dispatcher_listeners_refused_total{reason="capacity"}`:     1,
		`event_dispatcher_listeners_refused_total{reason="draining"}`:     0,
		"event_dispatcher_listeners":                                      2,
	})
}
