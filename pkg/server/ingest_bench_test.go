package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/pkg/access"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/clientip"
	"event-dispatcher/pkg/fixtures"
	"event-dispatcher/pkg/server"
)

// benchIngestServer is the real handler over a real hub with no listener
// but the hub's own probe, and a queue deep enough that the fan-out keeps
// up with a benchmark loop, applying policy.
func benchIngestServer(b *testing.B, policy access.Policy) *server.Server {
	hub, err := broadcast.New(broadcast.Options{QueueSize: 1 << 16, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = hub.Close(ctx)
	})
	return server.New(server.Options{
		Hub:             hub,
		Logger:          zerolog.Nop(),
		MaxBodyBytes:    64 << 10,
		BodyReadTimeout: 10 * time.Second,
		ClientIP:        clientip.New(nil),
		Access:          policy,
	})
}

// benchStartFixture is the real START message: pretty-printed as stored,
// and compact as players send it (JSON.stringify).
func benchStartFixture(b *testing.B) (pretty, compact []byte) {
	pretty, err := fixtures.Get("start.json")
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, pretty); err != nil {
		b.Fatal(err)
	}
	return pretty, buf.Bytes()
}

// benchResponse is a reusable http.ResponseWriter, so that the allocations
// reported are the handler's own.
type benchResponse struct {
	header http.Header
	code   int
}

func (r *benchResponse) Header() http.Header         { return r.header }
func (r *benchResponse) Write(p []byte) (int, error) { return len(p), nil }
func (r *benchResponse) WriteHeader(code int)        { r.code = code }

// BenchmarkIngest is one POST of the START fixture through the real
// handler (routing, CORS, size limit, validation and compaction, publish),
// compact as players send it or pretty-printed as stored.
// transport=inproc calls the handler directly; transport=http goes through
// a loopback server and a keep-alive client, so it includes both ends of
// the HTTP exchange. busy/op counts 503s, which should stay 0.
func BenchmarkIngest(b *testing.B) {
	pretty, body := benchStartFixture(b)
	for _, c := range []struct {
		name string
		body []byte
	}{{"compact", body}, {"pretty", pretty}} {
		b.Run("transport=inproc/body="+c.name, func(b *testing.B) { benchIngestInproc(b, c.body) })
	}
	b.Run("transport=inproc-parallel/body=compact", func(b *testing.B) {
		srv := benchIngestServer(b, access.Policy{})
		var busy atomic.Int64
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		b.RunParallel(func(pb *testing.PB) {
			reader := bytes.NewReader(body)
			req := httptest.NewRequest(http.MethodPost, "/api/events", nil)
			w := &benchResponse{header: http.Header{}}
			for pb.Next() {
				reader.Reset(body)
				req.Body, req.ContentLength = io.NopCloser(reader), int64(len(body))
				clear(w.header)
				srv.ServeHTTP(w, req)
				if w.code == http.StatusServiceUnavailable {
					busy.Add(1)
				} else if w.code != http.StatusNoContent {
					b.Errorf("status %d", w.code)
					return
				}
			}
		})
		b.ReportMetric(float64(busy.Load())/float64(b.N), "busy/op")
	})
	b.Run("transport=http/body=compact", func(b *testing.B) {
		ts := httptest.NewServer(benchIngestServer(b, access.Policy{}))
		b.Cleanup(ts.Close)
		client := ts.Client()
		var busy int
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			resp, err := client.Post(ts.URL+"/api/events", "application/json", bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			busy += benchBusy(b, resp.StatusCode)
		}
		b.ReportMetric(float64(busy)/float64(b.N), "busy/op")
	})
}

func benchIngestInproc(b *testing.B, body []byte) {
	srv := benchIngestServer(b, access.Policy{})
	reader := bytes.NewReader(body)
	req := httptest.NewRequest(http.MethodPost, "/api/events", nil)
	req.Header.Set("Content-Type", "application/json")
	w := &benchResponse{header: http.Header{}}
	var busy int
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		reader.Reset(body)
		req.Body, req.ContentLength = io.NopCloser(reader), int64(len(body))
		clear(w.header)
		srv.ServeHTTP(w, req)
		busy += benchBusy(b, w.code)
	}
	b.ReportMetric(float64(busy)/float64(b.N), "busy/op")
}

// benchBusy returns 1 for a 503 (queue full), 0 for a 204, and fails the
// benchmark on anything else.
func benchBusy(b *testing.B, code int) int {
	switch code {
	case http.StatusNoContent:
		return 0
	case http.StatusServiceUnavailable:
		return 1
	}
	b.Fatalf("status %d", code)
	return 0
}
