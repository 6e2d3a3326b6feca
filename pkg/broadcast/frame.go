package broadcast

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/r3labs/sse/v2"
)

// frame is one event formatted once for the wire, "data: <json>\n\n",
// shared by every listener queue that holds it.
type frame struct {
	b   []byte
	seq uint64
	ev  sse.Event // what travels through r3labs: Data is seq in decimal
	id  [20]byte  // backing array for ev.Data
}

func newFrame(data []byte) *frame {
	b := make([]byte, 0, len(data)+len("data: \n\n"))
	b = append(append(append(b, "data: "...), data...), "\n\n"...)
	return &frame{b: b}
}

// Fixed frames. Never modified.
var (
	heartbeatFrame = &frame{b: []byte(": hb\n\n")}
	retryFrame     = &frame{b: []byte("retry: 2000\n\n")} // first thing every stream gets
)

// frameRing maps the sequence numbers that r3labs carries back to frames.
//
// r3labs hands each subscriber a copy of what it writes, formatted anew, so
// sharing one frame among listeners needs a reference that survives being
// printed: the sequence number. A frame must stay in the ring until every
// listener's r3labs loop has looked it up. When a loop looks up frame s,
// the frames published after s are at most: 64 in its own channel, 1 held
// by the fan-out goroutine, and QueueSize in the stream's channel. Publish
// also stores the next frame before it knows whether r3labs takes it, one
// more. So a ring of QueueSize+67 slots or more never overwrites a frame a
// loop may still look up.
type frameRing struct {
	slots []atomic.Pointer[frame]
	mask  uint64
}

// ringMargin is r3labs' per-subscriber channel capacity, plus the event
// its fan-out goroutine holds, plus the frame being published, plus one.
const ringMargin = 64 + 1 + 1 + 1

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
	f.ev.Data = strconv.AppendUint(f.id[:0], seq, 10)
	r.slots[seq&r.mask].Store(f)
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

func (w *writeBuffers) put(b *[]byte) {
	*b = (*b)[:0]
	w.pool.Put(b)
}
