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
	max := s.opts.MaxBodyBytes
	tooLarge := "body exceeds " + strconv.FormatInt(max, 10) + " bytes"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.inflight.Add(1)
		defer s.inflight.Add(-1)
		if r.ContentLength > max {
			s.reject(w, http.StatusRequestEntityTooLarge, reasonTooLarge, tooLarge)
			return
		}
		// A client trickling its body is cut off after BodyReadTimeout.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.opts.BodyReadTimeout))
		buf := s.body()
		defer s.putBody(buf)
		if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, max)); err != nil {
			var tooBig *http.MaxBytesError
			switch {
			case errors.As(err, &tooBig):
				s.reject(w, http.StatusRequestEntityTooLarge, reasonTooLarge, tooLarge)
			case errors.Is(err, os.ErrDeadlineExceeded):
				// Nothing more of this body is worth waiting for.
				w.Header().Set("Connection", "close")
				s.reject(w, http.StatusRequestTimeout, reasonTimeout, "body not received within "+s.opts.BodyReadTimeout.String())
			default:
				s.reject(w, http.StatusBadRequest, reasonInvalid, "could not read body")
			}
			return
		}
		body := buf.Bytes()
		var ip string
		if s.opts.Publish.WantsClientIP() {
			ip = s.clientIP(r)
		}
		// Compact into a second pooled buffer: the hub and the sinks copy
		// what they keep.
		out := s.body()
		defer s.putBody(out)
		data, err := s.post.Publish(out.AvailableBuffer(), body, ip)
		if err != nil {
			s.refusePublish(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		s.metrics.eventSize.Observe(float64(len(data)))
	})
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
