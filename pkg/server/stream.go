package server

import (
	"errors"
	"net/http"

	"event-dispatcher/pkg/broadcast"
)

// handleStream serves the SSE stream, filtered by the query string (see
// parseFilter). A Content-Type on the GET (the real consumer sends one) is
// ignored, as is Last-Event-ID: nothing is replayed.
func (s *Server) handleStream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		filter, err := parseFilter(r.URL.RawQuery)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no") // nginx and friends: do not buffer the stream
		switch err := s.opts.Hub.ServeFiltered(w, r, filter); {
		case errors.Is(err, broadcast.ErrTooMany), errors.Is(err, broadcast.ErrClosed):
			h.Del("X-Accel-Buffering")
			h.Set("Retry-After", "5")
			writeError(w, http.StatusServiceUnavailable, err.Error())
		}
	})
}
