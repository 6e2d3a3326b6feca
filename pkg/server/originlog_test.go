package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

// lockedBuffer is a log sink safe for the server's concurrent handlers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// refusals returns the logged lines whose message starts "request refused".
func (l *lockedBuffer) refusals(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(l.b.Bytes(), []byte("\n")) {
		var rec map[string]any
		if len(line) > 0 && json.Unmarshal(line, &rec) != nil {
			t.Fatalf("log line %q is not JSON", line)
		}
		if m, _ := rec["message"].(string); len(m) > 15 && m[:15] == "request refused" {
			out = append(out, rec)
		}
	}
	return out
}

// A refused origin is logged, so a misconfigured CORS_ALLOWED_ORIGINS shows
// in the logs, but at most once per origin per minute and for a bounded
// number of origins, however many requests arrive; every refusal is
// counted in /health.
func TestRefusedOriginsLoggedOnceAndCounted(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{
		Logger: zerolog.New(&logs).Level(zerolog.InfoLevel), AllowOrigins: []string{"https://a.example"},
	})
	post := func(origin string) {
		t.Helper()
		r, err := srv.Do(within(t, 10*time.Second), http.MethodPost, "/api/events", http.Header{"Origin": {origin}}, []byte(`{}`))
		if err != nil || r.Status != http.StatusForbidden {
			t.Fatalf("POST from %s: %v, status %d; want 403", origin, err, r.Status)
		}
	}
	for range 5 {
		post("https://b.example")
	}
	const forged = 100
	for i := range forged {
		post(fmt.Sprintf("https://x%d.example", i))
	}
	recs := logs.refusals(t)
	if len(recs) == 0 || recs[0]["origin"] != "https://b.example" || recs[0]["level"] != "warn" {
		t.Fatalf("first refusal line %v, want a warning naming https://b.example", recs)
	}
	seen := map[any]int{}
	for _, r := range recs {
		seen[r["origin"]]++
	}
	if seen["https://b.example"] != 1 {
		t.Errorf("https://b.example logged %d times, want once", seen["https://b.example"])
	}
	if len(recs) >= forged {
		t.Errorf("%d refusal lines for %d distinct origins within a minute: not bounded", len(recs), forged+1)
	}
	if h, _ := srv.Health(t); h.OriginsRefused != 5+forged {
		t.Errorf("origins_refused %d, want %d", h.OriginsRefused, 5+forged)
	}
}
