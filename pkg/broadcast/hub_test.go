package broadcast_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

// Close must fan out everything accepted before it began, and only then end
// the streams, each with a final comment and a clean end, over real HTTP.
func TestCloseDeliversEverythingAcceptedThenEndsStreams(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{QueueSize: 4096, MaxLag: time.Minute}, server.Options{})
	const listeners, events = 20, 3000
	streams := make([]*ssetest.Stream, listeners)
	for i := range streams {
		streams[i] = ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	}
	for i := range events {
		if err := srv.Hub.Publish(fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	// Whether a backlog is left at Close depends on the machine here;
	// TestCloseDeliversTheBacklogBeforeEndingStreams makes sure of one.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- srv.Hub.Close(ctx) }()

	for i, s := range streams {
		for n := range events {
			if got, want := s.NextData(t, ctx), fmt.Sprintf(`{"n":%d}`, n); got != want {
				t.Fatalf("listener %d: event %d is %s, want %s", i, n, got, want)
			}
		}
		last, err := s.Next(ctx)
		for err == nil && last.IsComment() && last.Comments[0] == "hb" {
			last, err = s.Next(ctx)
		}
		if why, ok := last.EndReason(); err != nil || !ok || why != broadcast.ErrShutdown.Error() {
			t.Fatalf("listener %d: after the events got %q, %v; want the shutdown comment", i, last.Raw, err)
		}
		if _, err := s.Next(ctx); !errors.Is(err, io.EOF) {
			t.Fatalf("listener %d: stream did not end cleanly: %v", i, err)
		}
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := srv.Hub.Publish([]byte(`{}`)); !errors.Is(err, broadcast.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
	if got := srv.Hub.Stats().Listeners; got != 0 {
		t.Fatalf("%d listeners left after Close", got)
	}
}
