package broadcast

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/rs/zerolog"

	"event-dispatcher/pkg/fixtures"
)

// benchEvent is the real START message, compact, as the hub receives it
// from the ingest path.
func benchEvent(b *testing.B) []byte {
	b.Helper()
	raw, err := fixtures.Get("start.json")
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// benchDiscard is a flushable http.ResponseWriter that drops everything:
// the cost measured is the listener's, not a socket's.
type benchDiscard struct{ header http.Header }

func (d *benchDiscard) Header() http.Header         { return d.header }
func (d *benchDiscard) Write(p []byte) (int, error) { return len(p), nil }
func (d *benchDiscard) WriteHeader(int)             {}
func (d *benchDiscard) Flush()                      {}

// BenchmarkListenerEvent is the per-listener, per-event cost on the
// fan-out path for an idle listener (each event starts and ends one drain
// goroutine): what the r3labs subscriber loop prints for a batch of one
// event (three fmt calls, then Flush), resolved to the shared frame and
// written.
func BenchmarkListenerEvent(b *testing.B) {
	h, err := New(Options{Logger: zerolog.New(io.Discard)})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close(b.Context())
	f := newFrame(benchEvent(b))
	h.frames.put(f, 1)
	batch := appendRange(nil, 1, 1)
	var id []byte // r3labs events carry no id here: it writes "id: \n"
	s := h.newSubscription(&benchDiscard{header: http.Header{}}, nil, func(error) {})
	s.sh = h.pump.shards[0]
	s.Flush() // the retry hint
	s.q.drainer.Wait()
	b.ReportAllocs()
	b.SetBytes(int64(len(f.b)))
	for b.Loop() {
		fmt.Fprintf(s, "id: %s\n", id)
		fmt.Fprintf(s, "data: %s\n", batch)
		fmt.Fprint(s, "\n")
		s.Flush()
		s.q.drainer.Wait()
	}
	if s.q.dead {
		b.Fatalf("listener dropped: %v", s.q.reason)
	}
}
