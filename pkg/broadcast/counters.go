package broadcast

import "sync/atomic"

// Counters are the hub's figures for metrics: [Stats] plus what the
// listeners wrote and why listeners were dropped. Reading them costs one
// pass over the live listeners, so they are meant for a scrape, not for
// every request.
type Counters struct {
	Stats
	Deliveries     uint64 // events written to listeners' sockets
	BytesSent      uint64 // bytes written to listeners' sockets, heartbeats and retry hints included
	DroppedSlow    uint64 // listeners whose queue overflowed
	DroppedStalled uint64 // listeners whose socket accepted nothing within the write timeout
	QueueCapacity  int    // events the publish queue holds
}

// Sent is what one stream wrote to its client.
type Sent struct {
	Events uint64 // events, not counting heartbeats and retry hints
	Bytes  uint64 // everything written
}

// tally keeps the counters the fan-out would pay for if they were shared:
// each listener counts its own writes (one writer, its drain goroutine),
// and a listener's figures are folded in here only when it ends. Drops are
// counted per ended stream. None of this is touched per delivery.
type tally struct {
	endedEvents, endedBytes     atomic.Uint64
	droppedSlow, droppedStalled atomic.Uint64
}

// sentCounter is a listener's own count of what it wrote. Only the goroutine
// writing to the socket adds to it, once per batch; scrapes read it.
type sentCounter struct {
	events, bytes atomic.Uint64
}

func (c *sentCounter) add(batch []*frame) {
	var events, n int
	for _, f := range batch {
		if f.seq != 0 { // heartbeats and retry hints are not numbered
			events++
		}
		n += len(f.b)
	}
	c.events.Add(uint64(events))
	c.bytes.Add(uint64(n))
}

func (c *sentCounter) addEvents(events, bytes int) {
	c.events.Add(uint64(events))
	c.bytes.Add(uint64(bytes))
}

func (c *sentCounter) load() Sent { return Sent{Events: c.events.Load(), Bytes: c.bytes.Load()} }

// Counters returns the current counters.
func (h *Hub) Counters() Counters {
	c := Counters{Stats: h.Stats(), QueueCapacity: h.opts.QueueSize}
	h.mu.Lock()
	for sub := range h.listeners {
		s := sub.q.sent.load()
		c.Deliveries += s.Events
		c.BytesSent += s.Bytes
	}
	// Read under mu: remove folds a listener in and forgets it in one step,
	// so it is counted exactly once.
	c.Deliveries += h.tally.endedEvents.Load()
	c.BytesSent += h.tally.endedBytes.Load()
	h.mu.Unlock()
	c.DroppedSlow = h.tally.droppedSlow.Load()
	c.DroppedStalled = h.tally.droppedStalled.Load()
	return c
}
