package server

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// logLimit keeps refusals from flooding the log, however many requests or
// distinct keys (forged origins, client addresses) come: each key is
// logged at most once per minute, at most maxLogged keys per minute, and
// the refusals not logged are counted in the next line.
type logLimit struct {
	mu       sync.Mutex
	window   time.Time           // start of the current minute
	logged   map[string]struct{} // keys logged in this window; at most maxLogged
	unlogged uint64              // refusals not logged since the last line
}

const (
	refusalWindow = time.Minute
	maxLogged     = 20
)

// allow reports whether a refusal under key may be logged now and, if so,
// how many were not logged since the last line.
func (l *logLimit) allow(key string) (ok bool, unlogged uint64) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= refusalWindow || l.logged == nil {
		l.window, l.logged = now, make(map[string]struct{}, maxLogged)
	}
	if _, seen := l.logged[key]; seen || len(l.logged) >= maxLogged {
		l.unlogged++
		return false, 0
	}
	l.logged[key] = struct{}{}
	unlogged, l.unlogged = l.unlogged, 0
	return true, unlogged
}

// refusedOrigins counts requests refused for their Origin and logs them,
// each origin at most once per minute (logLimit).
type refusedOrigins struct {
	total atomic.Uint64
	limit logLimit
}

// refuse counts one refusal of r and logs it if the limits allow.
func (o *refusedOrigins) refuse(log zerolog.Logger, r *http.Request, origin string) {
	o.total.Add(1)
	ok, unlogged := o.limit.allow(origin)
	if !ok {
		return
	}
	log.Warn().Str("origin", origin).Str("method", r.Method).Str("path", r.URL.Path).Str("remote", r.RemoteAddr).
		Uint64("refusals_not_logged", unlogged).
		Msg("request refused: origin not in CORS_ALLOWED_ORIGINS (logged once per origin per minute)")
}
