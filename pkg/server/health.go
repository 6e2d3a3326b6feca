package server

import (
	"math"
	"net/http"
	"runtime"
	"time"

	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/broker"
	"event-dispatcher/pkg/kinesis"
	"event-dispatcher/pkg/upstream"
)

type health struct {
	Status string `json:"status"`
	broadcast.Stats
	EventsRejected uint64  `json:"events_rejected"`
	OriginsRefused uint64  `json:"origins_refused"`
	UptimeSeconds  float64 `json:"uptime_seconds"`
	Goroutines     int     `json:"goroutines"`
	Broker         string  `json:"broker"` // none, connected, connecting or down; the status code ignores it
	*brokerStats           // absent without a broker
	// Each followed upstream (UPSTREAM_URLS); absent without one. The
	// status code ignores them: listeners are served either way.
	Upstreams []upstream.Stats `json:"upstreams,omitempty"`

	Kinesis       string `json:"kinesis"` // off, ok, retrying or down; the status code ignores it
	*kinesisStats        // absent when off
}

type (
	brokerStats  = broker.Stats
	kinesisStats = kinesis.Stats
)

// handleHealth (public /health, admin /readyz) answers 200 only while the
// hub really fans out; 503 when it is wedged or the server is draining, so
// load balancers stop sending new work. A hub that is behind but moving is
// healthy: its lag shows in the metrics. Every figure is a cheap read: no
// stop-the-world work per probe.
func (s *Server) handleHealth() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := health{
			Status:         "ok",
			Stats:          s.opts.Hub.Stats(),
			EventsRejected: s.rejected4xx(),
			OriginsRefused: s.refused.total.Load(),
			UptimeSeconds:  roundMS(time.Since(s.started).Seconds()),
			Goroutines:     runtime.NumGoroutine(),
			Broker:         "none",
			Upstreams:      s.opts.Upstreams(),
			Kinesis:        "off",
		}
		body.FanoutLagSeconds = roundMS(body.FanoutLagSeconds)
		body.FanoutWaitMaxSeconds = roundMS(body.FanoutWaitMaxSeconds)
		if s.opts.Broker != nil { // local delivery works without it: not part of the status
			st := s.opts.Broker.Stats()
			body.Broker, body.brokerStats = st.State.String(), &st
		}
		if s.opts.Kinesis != nil { // forwarding is best effort: not part of the status
			st := s.opts.Kinesis.Stats()
			body.Kinesis, body.kinesisStats = st.State.String(), &st
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

// roundMS rounds seconds to the millisecond, so that they print as 12.726,
// not as the float64 sum 12.725999999999999 (a whole number of
// milliseconds divided by 1000 is the float nearest the decimal).
func roundMS(seconds float64) float64 { return math.Round(seconds*1000) / 1000 }

// handleLive (/livez) answers 200 whenever the process serves requests,
// overloaded, wedged or draining alike: restarting the process would only
// drop every listener at once.
func (s *Server) handleLive() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, struct {
			Status string `json:"status"`
		}{"ok"})
	})
}

// rejected4xx is the POSTs refused with a 4xx: /health's events_rejected,
// which predates the per-reason counters and leaves 503s to the hub's
// events_refused_busy.
func (s *Server) rejected4xx() uint64 {
	var n uint64
	for r := range numReasons {
		if r != reasonBusy {
			n += s.rejected[r].Load()
		}
	}
	return n
}
