package broadcast

import (
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// frame is one event formatted once for the wire, "data: <json>\n\n",
// shared by every listener queue that holds it.
type frame struct {
	b   []byte
	seq uint64
	at  time.Time // when it was accepted: the fan-out lag is measured from it
	// queued is the bytes of every frame published up to this one: what
	// was still waiting once it has been handed out is the hub's total
	// minus this.
	queued uint64

	fields frameFields // top-level members, read once when a filter asks
}

func newFrame(data []byte) *frame {
	b := make([]byte, 0, len(data)+len("data: \n\n"))
	b = append(append(append(b, "data: "...), data...), "\n\n"...)
	return &frame{b: b}
}

// Fixed frames. Never modified.
var heartbeatFrame = &frame{b: []byte(": hb\n\n")}

// retryFrame is the first thing every stream gets: a byte order mark, then a
// reconnection delay of 1000-2999 ms drawn for this stream, so that browsers
// cut off together (shutdown, MAX_STREAM_DURATION, a network blip) come back
// spread out. No client shows it as an event: EventSource (the WHATWG
// parser, and the npm eventsource package) drops one leading byte order
// mark, applies the retry field and dispatches nothing for a block without
// data; r3labs' client, which hands any block with a "retry:" line to its
// handlers as an event with empty Data, sees a line that does not begin
// with "retry:" and skips the block; a client that keeps the mark ignores
// an unknown field.
func retryFrame() *frame {
	b := strconv.AppendInt([]byte("\ufeffretry: "), 1000+rand.Int64N(2000), 10)
	return &frame{b: append(b, "\n\n"...)}
}

// endFrame is the last thing a stream the server ends gets: a comment naming
// why, for people reading the stream with curl. No client surfaces comments,
// and the reconnection delay was set by retryFrame.
func endFrame(cause error) *frame {
	return &frame{b: append(append([]byte(": end: "), cause.Error()...), "\n\n"...)}
}

// frameRing maps the sequence numbers that r3labs carries back to frames.
//
// r3labs hands each subscriber a copy of what it writes, formatted anew, so
// sharing one frame among listeners needs a reference that survives being
// printed: the sequence number. A frame must stay in the ring until every
// listener's r3labs loop has looked it up.
//
// How far back can a loop look? Publish refuses an event once QueueSize
// events wait to be handed to every shard, and the pump gives a shard its
// next batch (at most batchSize numbers) only after that shard's goroutine
// has taken the previous one, which it can do only after pushing the batch
// before into every loop's 64-slot channel. So when a loop looks up a
// batch, at most 64 more batches wait in its channel and 1 in its shard
// goroutine's hands, and the numbers after those are among the QueueSize
// waiting: QueueSize + 66 × batchSize numbers in all, its own batch
// included. TestRingOutlivesAStalledLoop drives real r3labs to that edge.
type frameRing struct {
	slots []atomic.Pointer[frame]
	mask  uint64
}

// ringMargin is what the ring must hold beyond QueueSize: see frameRing.
const ringMargin = 66 * batchSize

func newFrameRing(queueSize int) *frameRing {
	n := uint64(1)
	for n < uint64(queueSize+ringMargin) {
		n <<= 1
	}
	return &frameRing{slots: make([]atomic.Pointer[frame], n), mask: n - 1}
}

// put numbers f with seq and stores it.
func (r *frameRing) put(f *frame, seq uint64) {
	f.seq = seq
	r.slots[seq&r.mask].Store(f)
}

// release forgets the frame numbered seq, if it is still there.
func (r *frameRing) release(seq uint64) {
	slot := &r.slots[seq&r.mask]
	if f := slot.Load(); f != nil && f.seq == seq {
		slot.CompareAndSwap(f, nil)
	}
}

// get returns the frame numbered seq, or nil if it is no longer there.
func (r *frameRing) get(seq uint64) *frame {
	if f := r.slots[seq&r.mask].Load(); f != nil && f.seq == seq {
		return f
	}
	return nil
}

// writeBuffers lends the buffers that coalesce several frames into one
// write, so an idle listener holds none.
type writeBuffers struct{ pool sync.Pool }

// maxBatch is the most bytes coalesced into one write: large enough to
// amortise the syscall, small enough that a slow but reading client gets a
// fresh write deadline every maxBatch bytes.
const maxBatch = 16 << 10

func (w *writeBuffers) get() *[]byte {
	if b, ok := w.pool.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, maxBatch)
	return &b
}

// put keeps b for reuse unless one large event grew it well past maxBatch:
// a pool of such buffers would hold memory no ordinary batch needs.
func (w *writeBuffers) put(b *[]byte) {
	if cap(*b) > maxKeptBuffer {
		return
	}
	*b = (*b)[:0]
	w.pool.Put(b)
}

// maxKeptBuffer is the largest write buffer put keeps.
const maxKeptBuffer = 2 * maxBatch
