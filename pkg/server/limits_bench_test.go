package server_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"event-dispatcher/pkg/access"
)

// BenchmarkPublishLimit is one POST of the compact START fixture through
// the real handler with PUBLISH_RATE_PER_IP: without a limit, allowed by
// it, and refused by it (429), against a bad request of the same size
// (400, trailing data) without a limit. A refusal must cost no more than a
// bad request.
func BenchmarkPublishLimit(b *testing.B) {
	_, body := benchStartFixture(b)
	for _, c := range []struct {
		name   string
		policy access.Policy
		body   []byte
		want   int
	}{
		{"off/accepted", access.Policy{}, body, http.StatusNoContent},
		{"on/accepted", access.Policy{Publish: access.NewRateLimiter(1e9, 0)}, body, http.StatusNoContent},
		{"on/refused", access.Policy{Publish: access.NewRateLimiter(1e-9, 0)}, body, http.StatusTooManyRequests},
		{"off/bad-request", access.Policy{}, append(bytes.Clone(body), 'x'), http.StatusBadRequest}, // found at the last byte
	} {
		b.Run(c.name, func(b *testing.B) {
			srv := benchIngestServer(b, c.policy)
			reader := bytes.NewReader(c.body)
			req := httptest.NewRequest(http.MethodPost, "/api/events", nil)
			w := &benchResponse{header: http.Header{}}
			if c.want == http.StatusTooManyRequests { // use up the one-event burst
				req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
				srv.ServeHTTP(w, req)
			}
			b.ReportAllocs()
			for b.Loop() {
				reader.Reset(c.body)
				req.Body, req.ContentLength = io.NopCloser(reader), int64(len(c.body))
				clear(w.header)
				srv.ServeHTTP(w, req)
				if w.code != c.want && !(c.want == http.StatusNoContent && w.code == http.StatusServiceUnavailable) {
					b.Fatalf("status %d, want %d", w.code, c.want)
				}
			}
		})
	}
}
