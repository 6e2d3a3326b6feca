package server

import (
	"net/http"
	"runtime"
	"time"

	"event-dispatcher/pkg/broadcast"
)

type health struct {
	Status string `json:"status"`
	broadcast.Stats
	EventsRejected uint64  `json:"events_rejected"`
	OriginsRefused uint64  `json:"origins_refused"`
	UptimeSeconds  float64 `json:"uptime_seconds"`
	Goroutines     int     `json:"goroutines"`
}

// handleHealth answers 200 only while the hub really fans out; 503 when it
// is wedged or the server is draining. Every figure is a cheap read: no
// stop-the-world work per probe.
func (s *Server) handleHealth() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := health{
			Status:         "ok",
			Stats:          s.opts.Hub.Stats(),
			EventsRejected: s.rejected.Load(),
			OriginsRefused: s.refused.total.Load(),
			UptimeSeconds:  time.Since(s.started).Round(time.Millisecond).Seconds(),
			Goroutines:     runtime.NumGoroutine(),
		}
		code := http.StatusOK
		switch {
		case s.draining.Load():
			body.Status, code = "draining", http.StatusServiceUnavailable
		case !s.opts.Hub.Healthy():
			body.Status, code = "stalled", http.StatusServiceUnavailable
		}
		writeJSON(w, code, body)
	})
}
