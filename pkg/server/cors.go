package server

import (
	"net/http"
	"slices"
	"strings"
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

// preflight answers OPTIONS for a route that accepts allow. A CloudEvent
// in binary mode carries its attributes in ce- headers, whatever their
// names: those the browser asks for are allowed too.
func preflight(w http.ResponseWriter, r *http.Request, allow string) {
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", allow)
	headers := "Authorization, Content-Type, Last-Event-ID, Cache-Control"
	for _, name := range strings.Split(r.Header.Get("Access-Control-Request-Headers"), ",") {
		if name = strings.TrimSpace(name); len(name) > 3 && strings.EqualFold(name[:3], "ce-") && validToken(name) {
			headers += ", " + name
		}
	}
	h.Set("Access-Control-Allow-Headers", headers)
	h.Set("Access-Control-Max-Age", "86400")
	w.WriteHeader(http.StatusNoContent)
}

// validToken reports whether name is an HTTP token (RFC 9110 §5.6.2), so
// echoing it cannot forge another header.
func validToken(name string) bool {
	for i := range len(name) {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
