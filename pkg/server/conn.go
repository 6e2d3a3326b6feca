package server

import (
	"net/http"
	"time"
)

// unreadGrace is how long a client that declared a body the service will
// not read may go on sending it after the answer, so that the connection
// ends with a clean close rather than a reset that could lose the answer.
const unreadGrace = time.Second

// guardConn keeps a request from holding its connection beyond a deadline,
// whatever its route:
//
//   - Only POST has a body here. net/http discards an unread body (up to
//     256 KiB) before the first byte of the answer, with no deadline, so a
//     GET declaring "Content-Length: 1000" and sending nothing would hold a
//     listener slot forever. A request with a body that its route would
//     serve but not read gets 400 at once (see noBody); any answer to a
//     request with a body closes the connection, unless ingest has read
//     the body to the end, and what net/http still reads of it afterwards
//     is bounded by unreadGrace.
//   - Go's parser drops Content-Length when Transfer-Encoding is present, so
//     a chunked request cannot be told from one with both headers, which RFC
//     9112 §6.3 treats as a smuggling attempt: its connection is closed after
//     the answer.
//   - Every answer is written under WriteTimeout, so a client that never
//     reads (pipelining requests until the socket buffers fill) is cut off.
//     A stream moves the deadline forward on each of its writes.
func (s *Server) guardConn(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		_ = rc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
		if r.ContentLength == 0 { // no body: every GET of a well-behaved client
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Connection", "close") // -1 is chunked
		next.ServeHTTP(w, r)
		if w.Header().Get("Connection") == "close" {
			// Even when closing, net/http reads what is left of the body
			// (up to 256 KiB) after the answer, with no deadline of its own.
			_ = rc.SetReadDeadline(time.Now().Add(unreadGrace))
		}
	})
}

// keepConn lets the connection of a POST whose body was read to the end
// serve further requests, unless it came chunked (see guardConn).
func keepConn(w http.ResponseWriter, r *http.Request) {
	if len(r.TransferEncoding) == 0 {
		w.Header().Del("Connection")
	}
}

// noBody refuses a request with a body on a route that never reads one.
// guardConn has already asked for the connection to be closed, so net/http
// does not wait for the body.
func noBody(w http.ResponseWriter, r *http.Request) bool {
	if r.ContentLength == 0 || r.Method == http.MethodPost {
		return false
	}
	writeError(w, http.StatusBadRequest, "only POST requests may have a body")
	return true
}
