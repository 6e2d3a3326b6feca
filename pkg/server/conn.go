package server

import (
	"net/http"
	"time"
)

// unreadGrace bounds how long net/http may go on reading a body the service
// did not read, before or after answering.
const unreadGrace = time.Second

// guardConn keeps a request from holding its connection beyond a deadline,
// whatever its route:
//
//   - net/http reads what is left of an unread body (up to 256 KiB) before
//     the first byte of the answer, or after it when closing, with no
//     deadline: a GET /events declaring "Content-Length: 1000" and sending
//     nothing held a listener slot forever. Only POST has a body here: any
//     other request with one is answered and closed (400 from noBody on the
//     stream and health routes), and what net/http still reads of any body
//     is bounded by unreadGrace. A POST whose body arrives is kept alive.
//   - Go's parser drops Content-Length when Transfer-Encoding is present, so
//     a chunked request cannot be told from one with both headers, which RFC
//     9112 §6.3 treats as a smuggling attempt: its connection is closed after
//     the answer.
//   - Every answer is written under WriteTimeout (after BodyReadTimeout
//     for a POST), so a client that never reads (pipelining requests until
//     the socket buffers fill) is cut off.
//     A stream moves the deadline forward on each of its writes.
//
// The common cases, a GET without a body and a POST with Content-Length,
// touch no header. Over HTTP/2 the deadlines are the stream's own: a
// request holds its stream, never the connection (see closeAfter).
func (s *Server) guardConn(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		// A POST is answered after its body (up to BodyReadTimeout) or
		// what net/http reads of it (up to unreadGrace): its answer gets
		// WriteTimeout beyond those, or a 408 would fall due after the
		// deadline and never be sent.
		budget := s.opts.WriteTimeout
		if r.Method == http.MethodPost {
			budget += s.opts.BodyReadTimeout + unreadGrace
		}
		_ = rc.SetWriteDeadline(time.Now().Add(budget))
		if r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodPost || len(r.TransferEncoding) > 0 {
			closeAfter(w, r)
		}
		next.ServeHTTP(w, r)
		// Small answers are still buffered here: net/http writes them, and
		// reads the rest of the body first, once the handler has returned.
		_ = rc.SetReadDeadline(time.Now().Add(unreadGrace))
	})
}

// closeAfter asks net/http to close the connection once this answer is
// sent, so that nothing left of the request is read as the next one. Over
// HTTP/2 what is left of a request ends with its own stream (net/http
// resets it), and "Connection: close" would send GOAWAY, moving every later
// request of the connection's other streams to a new connection: nothing
// is set.
func closeAfter(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor < 2 {
		w.Header().Set("Connection", "close")
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
