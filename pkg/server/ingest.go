package server

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"strconv"
	"time"

	"event-dispatcher/pkg/publish"
)

// handleIngest accepts one JSON object per POST and hands its compact form
// to the hub. Content-Type is not checked: navigator.sendBeacon sends
// text/plain.
func (s *Server) handleIngest() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.inflight.Add(1)
		defer s.inflight.Add(-1)
		buf, ok := s.readBody(w, r)
		if !ok {
			return
		}
		defer s.putBody(buf)
		body := buf.Bytes()
		// Compact into a second pooled buffer: the hub and the sinks copy
		// what they keep.
		out := s.body()
		defer s.putBody(out)
		data, err := s.post.Publish(out.AvailableBuffer(), body, s.publishIP(r))
		if err != nil {
			s.refusePublish(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		s.metrics.eventSize.Observe(float64(len(data)))
	})
}

// readBody reads a POST body into a pooled buffer (give it back with
// putBody) within MaxBodyBytes and BodyReadTimeout. When it cannot, it
// answers (413, 408, 400) and returns false.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) (*bytes.Buffer, bool) {
	max := s.opts.MaxBodyBytes
	if r.ContentLength > max {
		s.reject(w, http.StatusRequestEntityTooLarge, reasonTooLarge, s.tooLarge())
		return nil, false
	}
	// A client trickling its body is cut off after BodyReadTimeout.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.opts.BodyReadTimeout))
	buf := s.body()
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, max)); err != nil {
		s.putBody(buf)
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			s.reject(w, http.StatusRequestEntityTooLarge, reasonTooLarge, s.tooLarge())
		case errors.Is(err, os.ErrDeadlineExceeded):
			// Nothing more of this body is worth waiting for.
			closeAfter(w, r)
			s.reject(w, http.StatusRequestTimeout, reasonTimeout, "body not received within "+s.opts.BodyReadTimeout.String())
		default:
			s.reject(w, http.StatusBadRequest, reasonInvalid, "could not read body")
		}
		return nil, false
	}
	return buf, true
}

func (s *Server) tooLarge() string {
	return "body exceeds " + strconv.FormatInt(s.opts.MaxBodyBytes, 10) + " bytes"
}

// publishIP is the sender's address for CLIENT_IP_FIELD, resolved only
// when events carry it.
func (s *Server) publishIP(r *http.Request) string {
	if s.opts.Publish.WantsClientIP() {
		return s.clientIP(r)
	}
	return ""
}

// refusePublish answers an event the publish path refused: 400 for an
// invalid one, 503 with Retry-After when the hub is saturated or closing.
func (s *Server) refusePublish(w http.ResponseWriter, err error) {
	if errors.Is(err, publish.ErrInvalid) {
		s.reject(w, http.StatusBadRequest, reasonInvalid, err.Error())
		return
	}
	w.Header().Set("Retry-After", "1")
	s.reject(w, http.StatusServiceUnavailable, reasonBusy, err.Error())
}

func (s *Server) reject(w http.ResponseWriter, code int, why reason, msg string) {
	s.rejected[why].Add(1)
	writeError(w, code, msg)
}

func (s *Server) body() *bytes.Buffer {
	if b, ok := s.bodies.Get().(*bytes.Buffer); ok {
		b.Reset()
		return b
	}
	return bytes.NewBuffer(make([]byte, 0, 4096))
}

// maxPooledBody is the largest body buffer kept for reuse: one huge POST
// must not leave every pooled buffer that large.
const maxPooledBody = 64 << 10

func (s *Server) putBody(b *bytes.Buffer) {
	if b.Cap() <= maxPooledBody {
		s.bodies.Put(b)
	}
}
