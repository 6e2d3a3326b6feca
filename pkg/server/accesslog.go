package server

import (
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

// accessLog logs one line per request at debug level. Query values are
// redacted, whatever their name; the Authorization header is never logged.
func accessLog(log zerolog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		e := log.Debug().Str("method", r.Method).Str("path", r.URL.Path)
		if r.URL.RawQuery != "" {
			e = e.Str("query", redactedQuery(r.URL.RawQuery))
		}
		e.Int("status", rec.status).Str("remote", r.RemoteAddr).Float64("duration_ms", float64(time.Since(start).Microseconds())/1000).Msg("request")
	})
}

// statusRecorder keeps Flush and Unwrap working: the stream needs both.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

// FlushError lets http.ResponseController report flush errors through the
// wrapper; Flush serves code that asserts http.Flusher.
func (s *statusRecorder) FlushError() error {
	return http.NewResponseController(s.ResponseWriter).Flush()
}

func (s *statusRecorder) Flush() { _ = s.FlushError() }

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
