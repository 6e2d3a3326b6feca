package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
)

// Over HTTP/2 too, a stream its client stopped reading cannot hold the
// shutdown past SHUTDOWN_TIMEOUT: the hub's cut-off resets it while the
// other streams of the same connection get every event and their end.
func TestShutdownCutsStalledHTTP2Stream(t *testing.T) {
	const shutdownTimeout, writeTimeout = 3 * time.Second, 30 * time.Minute
	p := startProcess(t, nil, "PORT=0", "SHUTDOWN_TIMEOUT="+shutdownTimeout.String(), "WRITE_TIMEOUT="+writeTimeout.String(),
		"SUBSCRIBER_BUFFER_BYTES=268435456") // the stalled stream is never dropped as slow
	_, base := p.listening(t)
	client := ssetest.H2CClient(t, 64<<10) // one connection; a stream not read blocks after 64 KiB

	guard, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(guard, http.MethodGet, base+"/events", nil)
	stalled, err := client.Do(req) // never read
	if err != nil || stalled.ProtoMajor != 2 {
		t.Fatalf("stalled stream: %v", err)
	}
	defer stalled.Body.Close()
	const nReaders = 2
	results := readToTheEnd(t, guard, client, base, nReaders)
	ssetest.Eventually(t, 30*time.Second, "three listeners", func() (bool, string) {
		n := listenersOf(t, base)
		return n == 3, fmt.Sprint(n, " listeners")
	})
	pad := strings.Repeat("x", 60000)
	const events = 50 // 3 MB: far beyond the stalled stream's window
	for seq := range events {
		body := fmt.Sprintf(`{"seq":%d,"pad":%q}`, seq, pad)
		resp, err := client.Post(base+"/metrics", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("POST %d: %d", seq, resp.StatusCode)
		}
	}
	if n := listenersOf(t, base); n != 3 {
		t.Fatalf("%d listeners after publishing, want 3 (the stalled one was dropped?)", n)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.exit(t, 2*time.Minute); code != 0 { // a tiny fraction of WRITE_TIMEOUT
		t.Fatalf("exit code %d; stderr:\n%s", code, p.stderr)
	}
	wantEveryEventThenTheEnd(t, results, events)
}

// readToTheEnd subscribes n readers to base's stream; each channel gets
// everything its reader received once the stream ended (io.EOF).
func readToTheEnd(t *testing.T, guard context.Context, client *http.Client, base string, n int) []chan []ssetest.Event {
	t.Helper()
	results := make([]chan []ssetest.Event, n)
	for i := range results {
		s := ssetest.Subscribe(t, client, base+"/events", nil)
		results[i] = make(chan []ssetest.Event, 1)
		go func() {
			var got []ssetest.Event
			for {
				e, err := s.Next(guard)
				if err != nil {
					if err != io.EOF {
						t.Errorf("reader %d: %v", i, err)
					}
					break
				}
				got = append(got, e)
			}
			results[i] <- got
		}()
	}
	return results
}

// wantEveryEventThenTheEnd checks that each reader from readToTheEnd got
// the events numbered 0 to events-1 in order, then the shutdown's end
// comment.
func wantEveryEventThenTheEnd(t *testing.T, results []chan []ssetest.Event, events int) {
	t.Helper()
	for i, c := range results {
		got := <-c
		seqs := 0
		for _, e := range got {
			if len(e.Data) == 0 {
				continue
			}
			var ev struct{ Seq int }
			if err := json.Unmarshal([]byte(e.Data[0]), &ev); err != nil || ev.Seq != seqs {
				t.Fatalf("reader %d: event %d is %.40q, want seq %d", i, seqs, e.Data[0], seqs)
			}
			seqs++
		}
		if seqs != events {
			t.Errorf("reader %d got %d events, want %d", i, seqs, events)
		}
		if len(got) == 0 {
			t.Errorf("reader %d got nothing", i)
		} else if reason, ok := got[len(got)-1].EndReason(); !ok || reason != "server shutting down" {
			t.Errorf("reader %d: last block %q, want the end comment", i, got[len(got)-1].Raw)
		}
	}
}
