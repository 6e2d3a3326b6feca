package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/connlimit"
)

// handleStream serves the SSE stream, filtered by the query string (see
// parseFilter). A Content-Type on the GET (the real consumer sends one) is
// ignored, as is Last-Event-ID: nothing is replayed.
func (s *Server) handleStream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		filter, err := parseFilter(r.URL.RawQuery)
		if err != nil {
			s.streamsRefused[refusedInvalid].Add(1)
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		// Its connection is never closed to make room for another
		// (package connlimit); over HTTP/2, with every request it carries,
		// and each stream beyond the connection's first counts against
		// MAX_CONNECTIONS_PER_IP as a connection of its own would.
		release, ok := connlimit.AdmitStream(r.Context(), r.ProtoMajor >= 2)
		if !ok {
			s.streamsRefused[refusedConnections].Add(1)
			w.Header().Set("Retry-After", "5")
			writeError(w, http.StatusTooManyRequests, "too many connections and streams open from this address")
			return
		}
		defer release()
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no") // nginx and friends: do not buffer the stream
		start := time.Now()
		// The hub logs the stream's start with this logger: the same
		// client as the line at its end, not the proxy's address.
		log := s.opts.Logger.With().Str("client_ip", s.clientIP(r)).Str("user_agent", r.UserAgent()).Logger()
		sent, err := s.opts.Hub.ServeFiltered(w, r.WithContext(log.WithContext(r.Context())), filter)
		switch {
		case errors.Is(err, broadcast.ErrTooMany), errors.Is(err, broadcast.ErrClosed):
			why := refusedCapacity
			if errors.Is(err, broadcast.ErrClosed) {
				why = refusedDraining
			}
			s.streamsRefused[why].Add(1)
			h.Del("X-Accel-Buffering")
			h.Set("Retry-After", "5")
			writeError(w, http.StatusServiceUnavailable, err.Error())
		default:
			s.streamEnded(log, time.Since(start), sent, err)
		}
	})
}

// streamEnded observes the stream's duration and logs one line for it:
// who (the client's address, not the load balancer's, anonymised as events
// are), how long, what it got and why it ended.
func (s *Server) streamEnded(log zerolog.Logger, d time.Duration, sent broadcast.Sent, cause error) {
	s.metrics.streamDuration.Observe(d.Seconds())
	e, msg := log.Info(), "listener disconnected"
	switch {
	case errors.Is(cause, broadcast.ErrSlow) || errors.Is(cause, broadcast.ErrStalled):
		e, msg = log.Warn(), "listener dropped"
	case errors.Is(cause, broadcast.ErrCutAtShutdown):
		e, msg = log.Warn(), "listener cut at shutdown"
	}
	reason := cause.Error()
	if errors.Is(cause, context.Canceled) { // the request's context: the client left
		reason = "client went away"
	}
	e.Float64("duration_s", roundMS(d.Seconds())).
		Uint64("events", sent.Events).Uint64("bytes", sent.Bytes).
		Str("reason", reason).Msg(msg)
}
