package server_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

func TestHealthReportsDocumentedFieldsAndCounters(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})

	r, err := srv.Do(within(t, 10*time.Second), http.MethodGet, "/health", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q", r.Status, r.Header.Get("Content-Type"))
	}
	var fields map[string]any
	if err := json.Unmarshal(r.Body, &fields); err != nil {
		t.Fatalf("%v in %s", err, r.Body)
	}
	documented := []string{"status", "listeners", "events_accepted", "events_refused_busy", "listeners_dropped",
		"fanout_lag_events", "fanout_lag_seconds", "fanout_wait_max_seconds", "events_rejected", "origins_refused", "uptime_seconds", "goroutines", "broker", "kinesis"}
	if got := slices.Sorted(maps.Keys(fields)); !slices.Equal(got, slices.Sorted(slices.Values(documented))) {
		t.Errorf("fields %q, want %q", got, documented)
	}
	if fields["status"] != "ok" || fields["broker"] != "none" || fields["kinesis"] != "off" {
		t.Errorf("status %v, broker %v, kinesis %v; want ok, none (no BROKER_URL), off (no KINESIS_STREAM_NAME)", fields["status"], fields["broker"], fields["kinesis"])
	}

	head, err := srv.Do(within(t, 10*time.Second), http.MethodHead, "/health", nil, nil)
	if err != nil || head.Status != http.StatusOK || len(head.Body) != 0 {
		t.Errorf("HEAD /health: %v, status %d, body %q; want 200 and no body", err, head.Status, head.Body)
	}

	s := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	good := ssetest.Fixture(t, "heartbeat.json")
	srv.Publish(t, good)
	srv.Publish(t, good)
	bad, err := srv.Post(within(t, 10*time.Second), "/api/events", "application/json", ssetest.Fixture(t, "start-invalid-trailing-comma.json"))
	if err != nil || bad.Status != http.StatusBadRequest {
		t.Fatalf("bad POST: %v, status %d", err, bad.Status)
	}
	for range 2 {
		s.NextData(t, within(t, 10*time.Second))
	}
	ssetest.Eventually(t, 10*time.Second, "counters", func() (bool, string) {
		h, code := srv.Health(t)
		want := ssetest.Health{Status: "ok", Listeners: 1, EventsAccepted: 2, EventsRejected: 1,
			UptimeSeconds: h.UptimeSeconds, Goroutines: h.Goroutines}
		return code == http.StatusOK && h == want && h.UptimeSeconds > 0 && h.Goroutines > 0, fmt.Sprintf("%d %+v", code, h)
	})
}

func TestHealthAnswers503DrainingAfterDrain(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	if h, code := srv.Health(t); code != http.StatusOK || h.Status != "ok" {
		t.Fatalf("before Drain: %d %+v", code, h)
	}
	srv.Server.Drain()
	if h, code := srv.Health(t); code != http.StatusServiceUnavailable || h.Status != "draining" {
		t.Errorf("GET after Drain: %d %+v, want 503 draining", code, h)
	}
	head, err := srv.Do(within(t, 10*time.Second), http.MethodHead, "/health", nil, nil)
	if err != nil || head.Status != http.StatusServiceUnavailable {
		t.Errorf("HEAD after Drain: %v, status %d, want 503", err, head.Status)
	}
}
