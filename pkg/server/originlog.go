package server

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// refusedOrigins counts requests refused for their Origin and logs them
// without letting a flood of requests, or of distinct forged origins, flood
// the log or grow memory: each origin at most once per minute, at most
// maxLogged origins per minute, the rest counted in the next line.
type refusedOrigins struct {
	total atomic.Uint64

	mu       sync.Mutex
	window   time.Time           // start of the current minute
	logged   map[string]struct{} // origins logged in this window; at most maxLogged
	unlogged uint64              // refusals not logged since the last line
}

const (
	refusalWindow = time.Minute
	maxLogged     = 20
)

// refuse counts one refusal of r and logs it if the limits allow.
func (o *refusedOrigins) refuse(log zerolog.Logger, r *http.Request, origin string) {
	o.total.Add(1)
	now := time.Now()
	o.mu.Lock()
	if now.Sub(o.window) >= refusalWindow || o.logged == nil {
		o.window, o.logged = now, make(map[string]struct{}, maxLogged)
	}
	_, seen := o.logged[origin]
	if seen || len(o.logged) >= maxLogged {
		o.unlogged++
		o.mu.Unlock()
		return
	}
	o.logged[origin] = struct{}{}
	unlogged := o.unlogged
	o.unlogged = 0
	o.mu.Unlock()
	log.Warn().Str("origin", origin).Str("method", r.Method).Str("path", r.URL.Path).Str("remote", r.RemoteAddr).
		Uint64("refusals_not_logged", unlogged).
		Msg("request refused: origin not in CORS_ALLOWED_ORIGINS (logged once per origin per minute)")
}
