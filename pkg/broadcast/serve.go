package broadcast

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

// jitter returns d shifted by a random amount within ±15%.
func jitter(d time.Duration) time.Duration {
	spread := int64(d) * 3 / 10
	if spread <= 0 {
		return d
	}
	return d - time.Duration(spread/2) + time.Duration(rand.Int64N(spread+1))
}

// Serve streams events to w until the client leaves, the listener is
// dropped, its maximum duration passes or the hub closes, and returns what
// it wrote and why the stream ended. The caller sets the response headers; nothing is
// written before the listener is subscribed, so a client that has read the
// first line will receive every event published afterwards. ErrTooMany and
// ErrClosed come back before anything is written.
func (h *Hub) Serve(w http.ResponseWriter, r *http.Request) (Sent, error) {
	return h.ServeFiltered(w, r, nil)
}

// ServeFiltered is [Hub.Serve] for a listener that receives only the events
// filter keeps, and every heartbeat.
//
// The line logged once the listener is subscribed goes to the logger in r's
// context ([zerolog.Ctx]) when there is one, so that the caller names the
// client as it resolved it (behind a proxy, anonymised); otherwise to the
// hub's logger, with the TCP peer's address.
func (h *Hub) ServeFiltered(w http.ResponseWriter, r *http.Request, filter *Filter) (Sent, error) {
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	s := h.newSubscription(w, nil, cancel)
	s.q.sse.disarmIdle = r.ProtoMajor >= 2
	log := zerolog.Ctx(r.Context())
	if log.GetLevel() == zerolog.Disabled { // no logger of the caller's: the TCP peer is all the hub knows
		l := h.log.With().Str("remote", r.RemoteAddr).Str("user_agent", r.UserAgent()).Logger()
		log = &l
	}
	return h.stream(ctx, cancel, s, filter, log)
}

// stream runs the listener of s, made with cancel, until ctx ends, the
// listener is dropped, its maximum duration passes or the hub closes.
func (h *Hub) stream(ctx context.Context, cancel context.CancelCauseFunc, s *subscription, filter *Filter, log *zerolog.Logger) (Sent, error) {
	l := &s.q
	l.filter = filter
	if err := h.add(s); err != nil {
		return Sent{}, err
	}
	defer h.remove(s)
	if d := h.opts.MaxStreamDuration; d > 0 {
		t := time.AfterFunc(jitter(d), func() { cancel(ErrMaxDuration) })
		defer t.Stop()
	}
	log.Info().Int64("listeners", h.active.Load()).Msg("listener connected")

	h.subscribe(ctx, s.sh, s, s) // returns once r3labs has unsubscribed s
	s.sh.leave(s)
	cause := l.finish(context.Cause(ctx))

	// The caller logs the stream's end, with the client's resolved address.
	switch {
	case errors.Is(cause, ErrStalled):
		h.dropped.Add(1)
		h.tally.droppedStalled.Add(1)
	case errors.Is(cause, ErrSlow):
		h.dropped.Add(1)
		h.tally.droppedSlow.Add(1)
	case errors.Is(cause, errLost), errors.Is(cause, errUnreadable): // a bug: counted, neither slow nor stalled
		h.dropped.Add(1)
	}
	return l.sent.load(), cause
}

func (h *Hub) add(s *subscription) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.draining:
		return ErrClosed
	case h.active.Load() >= int64(h.opts.MaxListeners):
		return ErrTooMany
	}
	h.active.Add(1)
	h.listeners[s] = struct{}{}
	s.sh = h.pump.leastLoaded()
	s.sh.assigned++
	h.gone.Add(1) // under mu with the draining check, so never after Close's Wait began
	return nil
}

func (h *Hub) remove(s *subscription) {
	sent := s.q.sent.load() // final: its drain goroutines have ended
	h.mu.Lock()
	h.tally.endedEvents.Add(sent.Events)
	h.tally.endedBytes.Add(sent.Bytes)
	delete(h.listeners, s)
	s.sh.assigned--
	h.active.Add(-1)
	h.mu.Unlock()
	h.gone.Done()
}
