package server

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"event-dispatcher/pkg/connlimit"
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

// adminBodyTimeout and maxAdminBody bound a request body on the admin port
// (pprof reads seconds= from a form, and symbol lookups are POSTed).
const (
	adminBodyTimeout = 10 * time.Second
	maxAdminBody     = 1 << 20
)

// readAdminBody reads a request's body, if any, up front within
// adminBodyTimeout: one trickled in would otherwise hold its connection for
// ever, and a server-wide ReadTimeout would also cancel every profile
// longer than itself (net/http ends the request's context when the
// connection's read deadline passes). One body is read at a time; another
// gets 429 at once, its connection closed unread: bodies are for the rare
// symbol lookup, and connections trickling bodies in are busy, so enough
// of them would fill the admin port's connection cap and keep /livez from
// answering.
func readAdminBody(next http.Handler) http.Handler {
	reading := make(chan struct{}, 1)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		select {
		case reading <- struct{}{}:
		default:
			// Closed unread: net/http would otherwise wait to discard up
			// to 256 KiB of the body after the answer, as slowly as it
			// trickles in.
			_ = http.NewResponseController(w).SetReadDeadline(time.Now())
			w.Header().Set("Connection", "close")
			w.Header().Set("Retry-After", strconv.Itoa(int(adminBodyTimeout.Seconds())))
			writeError(w, http.StatusTooManyRequests, "another request body is being read; one at a time")
			return
		}
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(adminBodyTimeout))
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
		<-reading
		if err != nil {
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusBadRequest, "request body unreadable, too slow or over 1 MiB")
			return
		}
		_ = rc.SetReadDeadline(time.Time{})
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
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
				// Long by design: never closed for room as a stuck request.
				defer connlimit.MarkStream(r.Context())()
			default:
				w.Header().Set("Retry-After", strconv.Itoa(MaxProfileSeconds))
				writeError(w, http.StatusTooManyRequests, "another profile or trace is running; one at a time")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
