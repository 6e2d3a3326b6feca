package server

import (
	"net/http"
	"slices"
)

// cors adds CORS headers to every response, errors included, so a browser
// fetch can read the outcome. With a list of origins, a matching Origin is
// echoed and Vary: Origin keeps caches from mixing origins; a request from
// a page on another origin is refused with 403, because CORS alone would
// only hide the answer: sendBeacon and no-cors fetch still publish. Clients
// that send no Origin (apps, the consumer, curl) are not affected.
func (s *Server) cors(next http.Handler) http.Handler {
	origins := s.opts.AllowOrigins
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Expose-Headers", "Retry-After, WWW-Authenticate")
		if origins == nil {
			h.Set("Access-Control-Allow-Origin", "*")
			next.ServeHTTP(w, r)
			return
		}
		h.Add("Vary", "Origin")
		switch o := r.Header.Get("Origin"); {
		case o == "":
		case slices.Contains(origins, o):
			h.Set("Access-Control-Allow-Origin", o)
		case r.Method == http.MethodPost:
			s.refused.refuse(s.opts.Logger, r, o)
			s.reject(w, http.StatusForbidden, reasonForbidden, "origin not allowed")
			return
		case r.Method != http.MethodOptions: // a preflight just gets no Allow-Origin
			s.refused.refuse(s.opts.Logger, r, o)
			writeError(w, http.StatusForbidden, "origin not allowed")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// preflight answers OPTIONS for a route that accepts allow.
func preflight(w http.ResponseWriter, allow string) {
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", allow)
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID, Cache-Control")
	h.Set("Access-Control-Max-Age", "86400")
	w.WriteHeader(http.StatusNoContent)
}
