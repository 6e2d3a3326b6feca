package kinesis

import (
	"context"
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/smithy-go"
)

// State is how forwarding goes.
type State int32

const (
	OK       State = iota // the last call succeeded
	Retrying              // records failed and are being resent (throttling, a failing call)
	Down                  // several calls in a row failed entirely: the stream is unreachable or refusing
)

func (s State) String() string {
	switch s {
	case OK:
		return "ok"
	case Retrying:
		return "retrying"
	}
	return "down"
}

// Why an event was dropped from the Kinesis path.
const (
	dropBufferFull = iota // the buffer (KINESIS_BUFFER_BYTES) was full: Kinesis slow or unreachable
	dropTooLarge          // larger than one Kinesis record (1 MiB with its key)
	dropRejected          // Kinesis refused the request itself (a validation error): resending cannot help
	dropShutdown          // still buffered when the shutdown deadline passed
	numDrops
)

// DropReasons label the dropped counters, in [Stats.Dropped]'s order.
var DropReasons = [numDrops]string{"buffer_full", "too_large", "rejected", "shutdown"}

// LatencyBuckets are the upper bounds, in seconds, of [Stats.Latency].
var LatencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Stats are the sink's counters since start.
type Stats struct {
	State         State             `json:"-"`
	Put           uint64            `json:"kinesis_put"`            // records Kinesis accepted
	Batches       uint64            `json:"kinesis_batches"`        // PutRecords calls that returned
	Failed        uint64            `json:"kinesis_failed"`         // record attempts that failed and were queued for resending
	FailedByCode  map[string]uint64 `json:"-"`                      // Failed, by Kinesis error code (or "transport", "timeout")
	Dropped       [numDrops]uint64  `json:"-"`                      // by reason, see DropReasons
	DroppedTotal  uint64            `json:"kinesis_dropped"`        // every reason
	BufferedBytes int64             `json:"kinesis_buffered_bytes"` // waiting or in flight
	BufferLimit   int64             `json:"kinesis_buffer_limit"`   // KINESIS_BUFFER_BYTES
	Latency       Histogram         `json:"-"`                      // seconds per PutRecords call
}

// Histogram is cumulative counts per bucket of [LatencyBuckets].
type Histogram struct {
	Counts []uint64 // Counts[i] calls took at most LatencyBuckets[i]
	Count  uint64
	Sum    float64
}

// maxCodes bounds the distinct error codes kept: the rest count as "other".
const maxCodes = 16

type counters struct {
	state   atomic.Int32
	put     atomic.Uint64
	batches atomic.Uint64
	dropped [numDrops]atomic.Uint64

	mu      sync.Mutex // the rest
	failed  map[string]uint64
	buckets []uint64
	count   uint64
	sum     float64
}

func (c *counters) init() {
	c.failed = map[string]uint64{}
	c.buckets = make([]uint64, len(LatencyBuckets))
}

func (c *counters) State() State { return State(c.state.Load()) }

func (c *counters) fail(code string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.failed[code]; !ok && len(c.failed) >= maxCodes {
		code = "other"
	}
	c.failed[code] += uint64(n)
}

func (c *counters) observe(d time.Duration) {
	sec := d.Seconds()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, b := range LatencyBuckets {
		if sec <= b {
			c.buckets[i]++
		}
	}
	c.count++
	c.sum += sec
}

// Stats returns the counters.
func (s *Sink) Stats() Stats {
	st := Stats{
		State:         s.stats.State(),
		Put:           s.stats.put.Load(),
		Batches:       s.stats.batches.Load(),
		BufferedBytes: s.bufferedBytes(),
		BufferLimit:   s.opts.BufferBytes,
	}
	for i := range st.Dropped {
		st.Dropped[i] = s.stats.dropped[i].Load()
		st.DroppedTotal += st.Dropped[i]
	}
	c := &s.stats
	c.mu.Lock()
	st.FailedByCode = maps.Clone(c.failed)
	st.Latency = Histogram{Counts: append([]uint64(nil), c.buckets...), Count: c.count, Sum: c.sum}
	c.mu.Unlock()
	for _, n := range st.FailedByCode {
		st.Failed += n
	}
	return st
}

// errorCode names a failed call for the failed counter: the service's
// error code, or what went wrong on the way.
func errorCode(err error) string {
	var api smithy.APIError
	switch {
	case errors.As(err, &api) && api.ErrorCode() != "":
		return api.ErrorCode()
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "transport"
}

// permanent reports whether Kinesis refused the request itself, so that
// the same request can never succeed. Everything else (throttling, a
// missing stream or permission, expired credentials, the network) is
// resent: an operator may fix it, and the buffer bounds the wait.
func permanent(err error) bool {
	var api smithy.APIError
	if !errors.As(err, &api) {
		return false
	}
	switch api.ErrorCode() {
	case "ValidationException", "InvalidArgumentException", "SerializationException":
		return true
	}
	return false
}
