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
	l := h.newListener(&benchDiscard{header: http.Header{}}, nil, func(error) {})
	l.sh = h.pump.shards[0]
	l.Flush() // the retry hint
	l.drainer.Wait()
	b.ReportAllocs()
	b.SetBytes(int64(len(f.b)))
	for b.Loop() {
		fmt.Fprintf(l, "id: %s\n", id)
		fmt.Fprintf(l, "data: %s\n", batch)
		fmt.Fprint(l, "\n")
		l.Flush()
		l.drainer.Wait()
	}
	if l.dead {
		b.Fatalf("listener dropped: %v", l.reason)
	}
}
