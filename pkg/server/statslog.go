package server

import (
	"context"
	"time"
)

// counterLine is what the periodic log line shows.
type counterLine struct {
	listeners                         int64
	accepted, rejected, busy          uint64
	deliveries, slow, stalled, lagged uint64
}

// LogCounters logs the main counters at info level every period, skipping
// periods in which none changed, until ctx ends.
func (s *Server) LogCounters(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var last counterLine
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c := s.opts.Hub.Counters()
		now := counterLine{
			listeners: c.Listeners, accepted: c.EventsAccepted, rejected: s.rejected4xx(),
			busy: s.rejected[reasonBusy].Load(), deliveries: c.Deliveries,
			slow: c.DroppedSlow, stalled: c.DroppedStalled, lagged: uint64(c.FanoutLagEvents),
		}
		if now == last {
			continue
		}
		last = now
		s.opts.Logger.Info().Int64("listeners", now.listeners).
			Uint64("events_accepted", now.accepted).Uint64("events_rejected", now.rejected).
			Uint64("events_refused_busy", now.busy).Uint64("deliveries", now.deliveries).
			Uint64("dropped_slow", now.slow).Uint64("dropped_stalled", now.stalled).
			Uint64("fanout_lag_events", now.lagged).Msg("counters")
	}
}
