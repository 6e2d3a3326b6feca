package server

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxProfileSeconds bounds the seconds= of the admin port's CPU profiles,
// traces and delta profiles: each holds its connection and costs CPU for
// that long.
const MaxProfileSeconds = 60

// AdminHTTPServer returns the http.Server for [Server.Admin]: the public
// port's header limits, and a write timeout that lets the longest profile
// finish (pprof refuses a seconds= beyond it) while a client that does not
// read an answer is cut off.
func (s *Server) AdminHTTPServer() *http.Server {
	return &http.Server{
		Handler:           s.admin,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      MaxProfileSeconds*time.Second + 15*time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          newStdLogger(s.opts.Logger),
	}
}

// oneProfile returns a wrapper that lets one timed profile run at a time (/debug/pprof/profile,
// /debug/pprof/trace, or any profile with seconds=): another gets 429 with
// a JSON error while it runs. seconds= must be above 0 and at most MaxProfileSeconds
// (400 otherwise), so no request holds the profiler, and its connection, longer.
func oneProfile() func(http.HandlerFunc) http.Handler {
	busy := make(chan struct{}, 1) // shared by every handler wrapped
	return func(next http.HandlerFunc) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			secs := r.FormValue("seconds") // where pprof reads it: query or form body
			timed := secs != "" || strings.HasSuffix(r.URL.Path, "/profile") || strings.HasSuffix(r.URL.Path, "/trace")
			if !timed {
				next.ServeHTTP(w, r)
				return
			}
			if n, err := strconv.ParseFloat(secs, 64); secs != "" && (err != nil || !(n > 0 && n <= MaxProfileSeconds)) {
				writeError(w, http.StatusBadRequest, "seconds must be above 0 and at most "+strconv.Itoa(MaxProfileSeconds))
				return
			}
			select {
			case busy <- struct{}{}:
				defer func() { <-busy }()
			default:
				w.Header().Set("Retry-After", strconv.Itoa(MaxProfileSeconds))
				writeError(w, http.StatusTooManyRequests, "another profile or trace is running; one at a time")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
