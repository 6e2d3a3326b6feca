package server

import (
	"bytes"
	"encoding/json"
	"log"
	"net/http"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
)

// writeError sends {"error": msg}. msg is ours, never the request body.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, struct {
		Error string `json:"error"`
	}{msg})
}

// writeJSON sends v with its length, so that the answer is complete even
// when flushed before the handler returns (see refuseUnread).
func writeJSON(w http.ResponseWriter, code int, v any) {
	body, _ := json.Marshal(v)
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// methods dispatches on the request method. OPTIONS answers a CORS
// preflight; a method not listed gets 405 with Allow.
func (s *Server) methods(handlers map[string]http.Handler) http.Handler {
	allowed := []string{}
	for _, m := range []string{"GET", "HEAD", "POST"} {
		if handlers[m] != nil {
			allowed = append(allowed, m)
		}
	}
	allow := strings.Join(append(allowed, "OPTIONS"), ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := handlers[r.Method]; h != nil {
			if noBody(w, r) {
				return
			}
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Allow", allow)
		if r.Method == http.MethodOptions {
			preflight(w, r, allow)
			return
		}
		writeError(w, http.StatusMethodNotAllowed, "method not allowed; use "+allow)
	})
}

// newStdLogger routes net/http's own messages (panics in handlers, TLS
// handshakes that failed) into the structured log.
func newStdLogger(l zerolog.Logger) *log.Logger {
	return log.New(stdLogWriter{l.With().Str("source", "net/http").Logger()}, "", 0)
}

// stdLogWriter writes net/http's messages as they come, at no level (so
// whatever LOG_LEVEL), except failed TLS handshakes: any client causes one
// per connection (a port scan, a load balancer's TCP probe, a client that
// does not trust the certificate), so they are debug, or anyone who can
// connect could fill the logs.
type stdLogWriter struct{ log zerolog.Logger }

func (w stdLogWriter) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, []byte("http: TLS handshake error")) {
		w.log.Debug().Msg(string(bytes.TrimSuffix(p, []byte("\n"))))
		return len(p), nil
	}
	return w.log.Write(p)
}
