package server

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"event-dispatcher/pkg/cloudevents"
	"event-dispatcher/pkg/publish"
)

// pushed is the answer to an accepted CloudEvent, word for word what the
// service these publishers come from answered.
const pushed = "Event pushed successfully"

// batchPatience is how long a batch waits, in all, for the fan-out to make
// room when the hub is saturated partway through it.
const batchPatience = time.Second

// handleCloudEvents accepts CloudEvents (v1.0, HTTP protocol binding, JSON
// event format) in the three content modes: structured, binary and
// batched. Each event is translated into its structured-mode JSON
// (pkg/cloudevents) and goes through the publish path's "cloudevents"
// door, so listeners get one JSON object per event, attributes at the top.
// A batch is all or none: every event is validated and compacted before
// the first is published.
func (s *Server) handleCloudEvents() http.Handler {
	door := s.opts.Publish.Door("cloudevents")
	check := func(obj []byte) error { return cloudevents.Check(obj, s.opts.ClientIPField) }
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.inflight.Add(1)
		defer s.inflight.Add(-1)
		mode, err := cloudevents.ModeOf(r.Header.Get("Content-Type"))
		if err != nil {
			s.refuseUnread(w, r, http.StatusUnsupportedMediaType, reasonUnsupported, err.Error())
			return
		}
		buf, ok := s.readBody(w, r)
		if !ok {
			return
		}
		defer s.putBody(buf)
		out := s.body()
		defer s.putBody(out)
		ip := s.publishIP(r)
		switch mode {
		case cloudevents.ModeBatch:
			s.pushBatch(w, r, door, check, buf.Bytes(), ip, out.AvailableBuffer())
			return
		case cloudevents.ModeBinary:
			s.pushBinary(w, r, door, check, buf.Bytes(), ip, out.AvailableBuffer())
			return
		}
		data, err := door.Prepare(out.AvailableBuffer(), buf.Bytes(), ip, check)
		if err == nil {
			err = door.Send(data)
		}
		if err != nil {
			s.refusePublish(w, err)
			return
		}
		s.metrics.eventSize.Observe(float64(len(data)))
		writeJSON(w, http.StatusOK, pushedAnswer{Message: pushed})
	})
}

// pushedAnswer is the success body; Count only for a batch.
type pushedAnswer struct {
	Message string `json:"message"`
	Count   *int   `json:"count,omitempty"`
}

// pushBinary publishes the event whose attributes are the ce- headers of r
// and whose data is body. The translated event must fit in MaxBodyBytes,
// like any event, or other replicas would refuse it.
func (s *Server) pushBinary(w http.ResponseWriter, r *http.Request, door *publish.Door, check func([]byte) error, body []byte, ip string, dst []byte) {
	attrs, err := ceHeaders(r.Header)
	if err == nil {
		scratch := s.body()
		defer s.putBody(scratch)
		var ev []byte
		ev, err = cloudevents.Binary(scratch.AvailableBuffer(), attrs, r.Header.Get("Content-Type"), body)
		if err == nil && int64(len(ev)) > s.opts.MaxBodyBytes {
			s.reject(w, http.StatusRequestEntityTooLarge, reasonTooLarge, "event exceeds "+strconv.FormatInt(s.opts.MaxBodyBytes, 10)+" bytes once encoded (attributes, and base64 for binary data)")
			return
		}
		if err == nil {
			var data []byte
			if data, err = door.Prepare(dst, ev, ip, check); err == nil {
				if err = door.Send(data); err == nil {
					s.metrics.eventSize.Observe(float64(len(data)))
					writeJSON(w, http.StatusOK, pushedAnswer{Message: pushed})
					return
				}
			}
		}
	}
	if errors.Is(err, cloudevents.ErrInvalid) {
		s.reject(w, http.StatusBadRequest, reasonInvalid, err.Error())
		return
	}
	s.refusePublish(w, err)
}

// ceHeaders returns the attributes carried by ce- headers, names lower
// case without the prefix, values percent-decoded. A header given twice is
// an error: an attribute has one value.
func ceHeaders(h http.Header) ([]cloudevents.Attr, error) {
	var attrs []cloudevents.Attr
	for k, vs := range h {
		if len(k) <= 3 || !strings.EqualFold(k[:3], "ce-") {
			continue
		}
		name := strings.ToLower(k[3:])
		if len(vs) > 1 {
			return nil, cloudevents.ErrDuplicate(name)
		}
		v, err := cloudevents.DecodeHeader(name, vs[0])
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, cloudevents.Attr{Name: name, Value: v})
	}
	return attrs, nil
}

// pushBatch validates and compacts every event of a batch, then publishes
// them in order. When the hub refuses one (saturated beyond batchPatience,
// or shutting down), the answer is 503 saying how many were published: the
// events before it were, the rest were not.
func (s *Server) pushBatch(w http.ResponseWriter, r *http.Request, door *publish.Door, check func([]byte) error, body []byte, ip string, dst []byte) {
	var ends []int
	err := cloudevents.Split(body, func(ev []byte) error {
		var err error
		dst, err = door.Prepare(dst, ev, ip, check)
		ends = append(ends, len(dst))
		return err
	})
	if err != nil {
		if errors.Is(err, cloudevents.ErrInvalid) || errors.Is(err, publish.ErrInvalid) {
			s.reject(w, http.StatusBadRequest, reasonInvalid, err.Error())
			return
		}
		s.refusePublish(w, err)
		return
	}
	events := make([][]byte, len(ends))
	start := 0
	for i, end := range ends {
		events[i] = dst[start:end]
		start = end
	}
	n, err := door.SendAll(r.Context(), events, batchPatience)
	for _, ev := range events[:n] {
		s.metrics.eventSize.Observe(float64(len(ev)))
	}
	if err != nil {
		w.Header().Set("Retry-After", "1")
		s.rejected[reasonBusy].Add(1)
		writeJSON(w, http.StatusServiceUnavailable, struct {
			Error     string `json:"error"`
			Published int    `json:"published"`
		}{err.Error() + "; " + strconv.Itoa(n) + " of " + strconv.Itoa(len(events)) + " events published, the rest not", n})
		return
	}
	writeJSON(w, http.StatusOK, pushedAnswer{Message: pushed, Count: &n})
}
