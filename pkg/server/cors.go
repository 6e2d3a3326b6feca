package server

import (
	"net/http"
	"slices"
)

// cors adds CORS headers to every response, errors included, so a browser
// fetch can read the outcome. With a list of origins, a matching Origin is
// echoed and Vary: Origin keeps caches from mixing origins.
func (s *Server) cors(next http.Handler) http.Handler {
	origins := s.opts.AllowOrigins
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		if origins == nil {
			h.Set("Access-Control-Allow-Origin", "*")
		} else {
			h.Add("Vary", "Origin")
			if o := r.Header.Get("Origin"); o != "" && slices.Contains(origins, o) {
				h.Set("Access-Control-Allow-Origin", o)
			}
		}
		h.Set("Access-Control-Expose-Headers", "Retry-After")
		next.ServeHTTP(w, r)
	})
}

// preflight answers OPTIONS for a route that accepts allow.
func preflight(w http.ResponseWriter, allow string) {
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", allow)
	h.Set("Access-Control-Allow-Headers", "Content-Type, Last-Event-ID, Cache-Control")
	h.Set("Access-Control-Max-Age", "86400")
	w.WriteHeader(http.StatusNoContent)
}
