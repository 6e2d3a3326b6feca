package server_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

// Not parallel: it counts the process's goroutines.
func TestStalledListenerIsDroppedWithoutSlowingOthers(t *testing.T) {
	cases := []struct {
		name         string
		bufferBytes  int
		writeTimeout time.Duration
		reason       string // as the dropped-listeners metric labels it
	}{
		{"small queue overflows", 64 << 10, time.Second, "slow"},
		// A queue far larger than the test sends: only the write deadline
		// can drop the listener.
		{"socket accepts nothing for WRITE_TIMEOUT", 1 << 30, time.Second, "stalled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stallOneListener(t, c.bufferBytes, c.writeTimeout, c.reason)
		})
	}
}

// stallOneListener runs a healthy listener and one that never reads, and
// publishes until the stalled one is dropped.
func stallOneListener(t *testing.T, bufferBytes int, writeTimeout time.Duration, reason string) {
	const publishers, maxRounds = 2, 1500
	srv := ssetest.Start(t, broadcast.Options{
		BufferBytes: bufferBytes, WriteTimeout: writeTimeout, Logger: zerolog.New(zerolog.NewTestWriter(t)),
	}, server.Options{})
	healthy := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	srv.Client.CloseIdleConnections()
	baseline := runtime.NumGoroutine()

	// The stalled listener: a real consumer's request, then never a read.
	conn := srv.Dial(t)
	if _, err := io.WriteString(conn, "GET /events HTTP/1.1\r\nHost: dispatcher\r\nContent-Type: application/json\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	ssetest.Eventually(t, 10*time.Second, "the stalled listener is connected", func() (bool, string) {
		h, _ := srv.Health(t)
		return h.Listeners == 2, fmt.Sprintf("%+v", h)
	})

	// Each round, every publisher posts one 16 KiB event at the same time,
	// and the healthy listener must receive them all before the next round:
	// its queue never holds more than one round, whatever the machine's
	// load, while the stalled listener's socket buffers (a few MiB on
	// loopback) fill up, and then its queue overflows or its socket write
	// times out.
	pad := fmt.Sprintf(`"pad":"%s"`, strings.Repeat("p", 16<<10))
	var fixtures [][]byte
	for _, f := range loadValid(t) {
		fixtures = append(fixtures, ssetest.WithMembers(f, pad))
	}
	rounds := 0
	for ; rounds < maxRounds; rounds++ {
		want := publishRound(t, srv, fixtures, publishers, rounds)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for range publishers {
			data := healthy.NextData(t, ctx)
			g, err := tagOf(data)
			if err != nil || want[g] != data {
				t.Fatalf("round %d: healthy listener got %.80q (%v), not one of this round's events", rounds, data, err)
			}
			delete(want, g)
		}
		cancel()
		if rounds%8 == 7 {
			if h, _ := srv.Health(t); h.Listeners < 2 {
				break
			}
		}
	}
	if rounds == maxRounds {
		t.Fatalf("stalled listener not dropped after %d rounds of %d events of 16 KiB", rounds, publishers)
	}
	t.Logf("stalled listener gone after %d rounds of %d events of 16 KiB", rounds+1, publishers)
	if h, _ := srv.Health(t); h.ListenersDropped != 1 {
		t.Errorf("health listeners_dropped = %d after the stalled listener left, want 1", h.ListenersDropped)
	}
	m := ssetest.Scrape(t, srv.Admin+"/metrics")
	for _, r := range []string{"slow", "stalled"} {
		want := map[bool]float64{true: 1, false: 0}[r == reason]
		if got := m.Samples[`event_dispatcher_listeners_dropped_total{reason="`+r+`"}`]; got != want {
			t.Errorf("listeners_dropped_total{reason=%q} = %v, want %v", r, got, want)
		}
	}
	// An event published after the drop reaches the healthy listener only.
	after := tagged(fixtures[0], tag{Pub: publishers})
	last := compact(t, after)
	srv.Publish(t, after)
	if got := healthy.NextData(t, within(t, 10*time.Second)); got != last {
		t.Errorf("healthy listener got %.80q after the last round, want the last event", got)
	}

	ssetest.Eventually(t, 10*time.Second, "the stalled listener is gone", func() (bool, string) {
		h, _ := srv.Health(t)
		return h.Listeners == 1 && h.ListenersDropped == 1, fmt.Sprintf("%+v", h)
	})
	// Once its handler has returned, the server may keep the connection
	// as an idle keep-alive one: one goroutine, plus one of slack.
	srv.Client.CloseIdleConnections()
	ssetest.Eventually(t, 10*time.Second, "goroutines back near the baseline", func() (bool, string) {
		n := runtime.NumGoroutine()
		return n <= baseline+2, fmt.Sprintf("%d goroutines, baseline %d", n, baseline)
	})

	// What the stalled client finally reads is whole events, then the end
	// of the stream or of the connection.
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second)) // a guard against a hang only
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("stalled client: reading the response: %v", err)
	}
	stalled := ssetest.FromResponse(resp)
	defer stalled.Close()
	n := 0
	for {
		e, err := stalled.Next(within(t, 20*time.Second))
		if err != nil {
			if !errors.Is(err, io.EOF) && !isConnCut(err) {
				t.Errorf("stalled client: after %d events: %v", n, err)
			}
			break
		}
		if n == 0 && (e.Retry == "" || len(e.Data) > 0) {
			t.Errorf("stalled client: first block %.80q", e.Raw)
		}
		if n > 0 {
			if g, err := tagOf(strings.Join(e.Data, "")); err != nil || len(e.Data) != 1 {
				t.Errorf("stalled client: block %d is not a whole event: %.80q (%v)", n, e.Raw, err)
			} else if g.Pub == publishers {
				t.Errorf("stalled client: got an event published after it was dropped")
			}
		}
		n++
	}
	t.Logf("stalled client read %d whole blocks before the end", n)
}

// publishRound has each publisher post one tagged event concurrently,
// requires 204 for all, and returns what listeners must receive, by tag.
func publishRound(t *testing.T, srv *ssetest.Server, fixtures [][]byte, publishers, round int) map[tag]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	want := map[tag]string{}
	bodies := make([][]byte, publishers)
	for p := range publishers {
		g := tag{Pub: p, Seq: round}
		bodies[p] = tagged(fixtures[(p+round)%len(fixtures)], g)
		want[g] = compact(t, bodies[p])
	}
	status := make([]int, publishers)
	errs := make([]error, publishers)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			r, err := srv.Post(ctx, "/api/events", "application/json", bodies[p])
			status[p], errs[p] = r.Status, err
		})
	}
	wg.Wait()
	for p := range publishers {
		if errs[p] != nil || status[p] != http.StatusNoContent {
			t.Fatalf("round %d, publisher %d: %v, status %d", round, p, errs[p], status[p])
		}
	}
	return want
}
