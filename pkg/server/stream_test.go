package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

func TestStreamSendsSSEHeadersAndRetryBeforeAnyEvent(t *testing.T) {
	t.Parallel()
	type tc struct {
		name   string
		path   string
		header http.Header
		debug  bool // access log on: the stream goes through its wrapper
	}
	headers := []struct {
		name string
		h    http.Header
	}{
		{"no header", nil},
		{"consumer's Content-Type ignored", http.Header{"Content-Type": {"application/json"}}},
		{"Last-Event-ID ignored", http.Header{"Last-Event-ID": {"not-a-number"}}},
	}
	var cases []tc
	for _, path := range []string{"/events", "/event-dispatcher"} {
		for _, h := range headers {
			for _, debug := range []bool{false, true} {
				cases = append(cases, tc{fmt.Sprintf("%s %s access log %v", path, h.name, debug), path, h.h, debug})
			}
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			opts := server.Options{}
			if c.debug {
				opts.Logger = zerolog.New(io.Discard).Level(zerolog.DebugLevel)
			}
			srv := ssetest.Start(t, broadcast.Options{}, opts)

			// Events flow the whole time the listener connects: none may
			// come before the retry line, and one published after it arrives.
			ctx, stop := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			defer wg.Wait()
			defer stop()
			wg.Go(func() {
				for n := 0; ctx.Err() == nil; n++ {
					_, _ = srv.Post(ctx, "/api/events", "", fmt.Appendf(nil, `{"n":%d}`, n))
				}
			})
			s := ssetest.Subscribe(t, srv.Client, srv.URL+c.path, c.header) // checks the three headers
			// A byte order mark keeps the retry field from r3labs' client,
			// which would hand it over as an empty event.
			if ms, err := strconv.Atoi(s.First.Retry); !strings.HasPrefix(s.First.Raw, "\ufeffretry: ") || err != nil || ms < 1000 || ms >= 3000 {
				t.Errorf("first block %q, want a byte order mark and a retry of 1000-2999 ms", s.First.Raw)
			}
			if got := s.NextData(t, within(t, 10*time.Second)); got == "" {
				t.Error("empty event")
			}
			if got := s.Resp.Header.Get("Content-Length"); got != "" {
				t.Errorf("Content-Length %q on a stream", got)
			}
		})
	}
}

func TestHeartbeatCommentsKeepAnIdleStreamAlive(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		interval time.Duration
		want     int // heartbeats to wait for; 0: none may arrive
	}{
		{"every 50ms", 50 * time.Millisecond, 3},
		{"disabled", 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := ssetest.Start(t, broadcast.Options{Heartbeat: c.interval}, server.Options{})
			s := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
			if c.want == 0 {
				// A bounded wait: nothing may arrive while nothing is sent.
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer cancel()
				if e, err := s.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("got block %q, err %v; want nothing", e.Raw, err)
				}
				return
			}
			ctx := within(t, 10*time.Second)
			for i := range c.want {
				e, err := s.Next(ctx)
				if err != nil {
					t.Fatalf("heartbeat %d: %v", i, err)
				}
				if e.Raw != ": hb\n\n" {
					t.Fatalf("block %q, want %q", e.Raw, ": hb\n\n")
				}
			}
		})
	}
}

func TestMaxSubscribersRefusesExtraListenersUntilOneLeaves(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{MaxListeners: 2}, server.Options{})
	first := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	ssetest.Subscribe(t, srv.Client, srv.URL+"/event-dispatcher", nil)

	for _, path := range []string{"/events", "/event-dispatcher"} {
		r, err := srv.Do(within(t, 10*time.Second), http.MethodGet, path, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, r, http.StatusServiceUnavailable, broadcast.ErrTooMany.Error(), nil)
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("GET %s: 503 without Retry-After", path)
		}
		if got := r.Header.Get("X-Accel-Buffering"); got != "" {
			t.Errorf("GET %s: 503 with X-Accel-Buffering %q", path, got)
		}
	}
	if h, _ := srv.Health(t); h.Listeners != 2 {
		t.Errorf("health listeners = %d after refusals, want 2", h.Listeners)
	}

	first.Close()
	ssetest.Eventually(t, 10*time.Second, "the closed listener is gone", func() (bool, string) {
		h, _ := srv.Health(t)
		return h.Listeners == 1, fmt.Sprintf("%d listeners", h.Listeners)
	})
	s := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	srv.Publish(t, []byte(`{"after":"rejoin"}`))
	if got := s.NextData(t, within(t, 10*time.Second)); got != `{"after":"rejoin"}` {
		t.Errorf("new listener got %q", got)
	}
}

func TestMaxStreamDurationEndsStreamsCleanly(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{MaxStreamDuration: time.Second}, server.Options{})
	s := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	srv.Publish(t, []byte(`{"before":"end"}`))
	ctx := within(t, 10*time.Second)
	if got := s.NextData(t, ctx); got != `{"before":"end"}` {
		t.Fatalf("got %q", got)
	}
	e, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("waiting for the end of the stream: %v", err)
	}
	if why, ok := e.EndReason(); !ok || why != broadcast.ErrMaxDuration.Error() {
		t.Fatalf("last block %q does not say the stream reached its maximum duration", e.Raw)
	}
	if _, err := s.Next(ctx); !errors.Is(err, io.EOF) {
		t.Fatalf("after the end comment: %v, want a clean end", err)
	}
	ssetest.Eventually(t, 10*time.Second, "the listener is gone", func() (bool, string) {
		h, _ := srv.Health(t)
		return h.Listeners == 0 && h.ListenersDropped == 0, fmt.Sprintf("%+v", h)
	})
}
