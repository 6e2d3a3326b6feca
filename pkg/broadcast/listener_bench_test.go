package broadcast

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"
)

// benchEvent is the real START message, compact, as the hub receives it
// from the ingest path.
func benchEvent(b *testing.B) []byte {
	b.Helper()
	raw, err := os.ReadFile("../../cmd/loadtest/fixtures/start.json")
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
// fan-out path, for an idle listener (each event starts and ends one drain
// goroutine). encode=r3labs formats the event exactly as the r3labs
// subscriber loop does (three fmt.Fprintf calls, then Flush); encode=frame
// writes a frame formatted once for all listeners, which is what the hub
// could do if it formatted events itself.
func BenchmarkListenerEvent(b *testing.B) {
	data := benchEvent(b)
	frame := append(append([]byte("data: "), data...), "\n\n"...)
	var id []byte // r3labs events carry no id here: it writes "id: \n"
	for _, encode := range []string{"r3labs", "frame"} {
		b.Run("encode="+encode, func(b *testing.B) {
			l := newListener(&benchDiscard{header: http.Header{}}, func(error) {}, 1<<20, 10*time.Second)
			l.Flush() // the retry hint
			l.drainer.Wait()
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if encode == "r3labs" {
					fmt.Fprintf(l, "id: %s\n", id)
					fmt.Fprintf(l, "data: %s\n", data)
					fmt.Fprint(l, "\n")
				} else {
					_, _ = l.Write(frame)
				}
				l.Flush()
				l.drainer.Wait()
			}
		})
	}
}
