package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

// The periodic line shows the main counters, and only when one changed.
func TestCounterLineOnlyWhenSomethingChanged(t *testing.T) {
	t.Parallel()
	logs := &lockedBuffer{}
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{Logger: zerolog.New(logs)})
	srv.Publish(t, ssetest.Fixture(t, "stop.json"))
	if r := post(t, srv, "/api/events", []byte(`nope`), false); r.Status != 400 {
		t.Fatalf("status %d", r.Status)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Server.LogCounters(ctx, 20*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	ssetest.Eventually(t, 10*time.Second, "a counter line", func() (bool, string) {
		return len(logs.records(t, "counters")) > 0, ""
	})
	// Ten quiet periods: no new line.
	time.Sleep(200 * time.Millisecond)
	recs := logs.records(t, "counters")
	if len(recs) != 1 {
		t.Fatalf("%d counter lines for one change, want 1: %v", len(recs), recs)
	}
	if r := recs[0]; r["level"] != "info" || r["events_accepted"] != 1.0 || r["events_rejected"] != 1.0 || r["listeners"] != 0.0 {
		t.Errorf("counter line %v: want info, events_accepted 1, events_rejected 1, listeners 0", r)
	}
	srv.Publish(t, ssetest.Fixture(t, "stop.json"))
	ssetest.Eventually(t, 10*time.Second, "a second line after a change", func() (bool, string) {
		recs := logs.records(t, "counters")
		return len(recs) == 2 && recs[1]["events_accepted"] == 2.0, ""
	})
}
