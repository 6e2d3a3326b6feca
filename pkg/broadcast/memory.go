package broadcast

import (
	"context"
	"runtime"
	"runtime/debug"
	"time"
)

// reclaimMin is the smallest departure worth giving memory back for.
const reclaimMin = 1000

// reclaim gives memory back to the operating system once a mass departure
// has settled (at least reclaimMin listeners gone, fewer than half of the
// peak left, and the count steady for a second). Each listener holds tens
// of kilobytes of goroutine stacks and connection buffers; after they go,
// an idle server runs no garbage collection and Go's scavenger returns
// pages only slowly, so without this the RSS of 10,000 departed listeners
// would stay for many minutes.
func (h *Hub) reclaim(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	peak, prev := h.active.Load(), h.active.Load()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := h.active.Load()
		switch {
		case n > peak:
			peak = n
		case n == prev && peak-n >= reclaimMin && n < peak/2:
			start := time.Now()
			// Two collections: sync.Pool (listeners' write buffers, request
			// buffers) keeps its contents through the first.
			runtime.GC()
			debug.FreeOSMemory()
			h.log.Info().Int64("listeners", n).Int64("peak", peak).Int64("took_ms", time.Since(start).Milliseconds()).
				Msg("memory returned to the system after listeners left")
			peak = n
		}
		prev = n
	}
}
