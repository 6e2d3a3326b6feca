package broadcast

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"

	"github.com/r3labs/sse/v2"
)

// The r3labs adapter: the only code that knows github.com/r3labs/sse/v2.
// The data path reads: Publish (hub.go) numbers a frame → the pump hands
// runs of numbers to r3labs streams (here) → r3labs' loop per subscriber
// prints each run into the listener's [subscription] (here), which
// resolves the numbers to frames in the listener's queue (listener.go) →
// its drain writes them to the client (sink.go, listen.go).

// fanout is the r3labs server holding the shards' streams.
type fanout struct{ srv *sse.Server }

func newFanout() *fanout {
	s := sse.New()
	s.AutoReplay = false // its event log keeps every event forever
	s.AutoStream = false
	// Unbuffered: a hand-over succeeds only while the shard's goroutine is
	// idle, so pending sign-ups and departures go first (see pump).
	s.BufferSize = 0
	return &fanout{srv: s}
}

func (f *fanout) createStream(id string) { f.srv.CreateStream(id) }
func (f *fanout) close()                 { f.srv.Close() }

// handout is one r3labs event: a batch of sequence numbers or a heartbeat.
type handout = *sse.Event

func batchHandout(first, last uint64) handout {
	return &sse.Event{Data: appendRange(make([]byte, 0, 41), first, last)}
}

// heartbeatHandout is shared by every heartbeat: r3labs does not modify
// events without replay.
func heartbeatHandout() handout { return &sse.Event{Comment: []byte("hb")} }

// offer hands ev to the stream only if its goroutine is idle.
func (f *fanout) offer(stream string, ev handout) bool { return f.srv.TryPublish(stream, ev) }

// give hands ev to the stream, waiting for its goroutine; it returns once
// taken, or when the stream is closed.
func (f *fanout) give(stream string, ev handout) { f.srv.Publish(stream, ev) }

// errUnreadable reports what cannot happen, should it ever: r3labs handed
// a subscription a line that is not a batch the pump formatted. Its
// listener is dropped rather than silently missing events.
var errUnreadable = errors.New("dropped: the fan-out handed it an unreadable batch")

// subscription is a listener's side facing r3labs: the http.ResponseWriter
// r3labs' loop for one subscriber writes to, and the shard's bookkeeping
// of what that loop has taken. r3labs can only hand a subscriber text, so
// this is where the printed runs of numbers become frames in the queue.
// It holds its listener (the queue) by value: one allocation per listener.
//
// Who owns what:
//   - sh is set by Hub.add (under Hub.mu) before subscribing, then read;
//   - slot is guarded by sh.mu (another member's departure moves it);
//   - confirmed and joined are written by the r3labs loop (the goroutine
//     in Hub.subscribe), and read by it, by shard.leave once the loop is
//     over, and by tests under the shard's mu;
//   - taken is written by the r3labs loop and read by the hub's frame
//     release (shard.lowest);
//   - q, the listener, guards itself (see listener).
type subscription struct {
	q  listener
	sh *shard

	confirmed bool   // registered with r3labs: its first Flush has come
	slot      int32  // its index in sh.members; guarded by sh.mu (next to confirmed: no padding)
	joined    uint64 // the shard's batch in flight when it registered
	// taken is the last number of the last batch it took, or, before its
	// first, what its shard had received when it joined: it will look up
	// no frame up to it.
	taken atomic.Uint64
}

// newSubscription returns a subscription whose listener drains into out,
// or, when out is nil, into w as an SSE stream.
func (h *Hub) newSubscription(w http.ResponseWriter, out sink, cancel context.CancelCauseFunc) *subscription {
	s := &subscription{}
	s.q.init(h, w, out, cancel)
	return s
}

// subscribe feeds w, normally s itself, from the r3labs stream of shard sh
// until ctx ends. The caller then calls sh.leave(s).
func (h *Hub) subscribe(ctx context.Context, sh *shard, w http.ResponseWriter, s *subscription) {
	sh.join(s)
	h.fan.srv.ServeHTTP(w, sh.req.WithContext(ctx))
}

// subscribeRequest is the request handed to r3labs for every subscription
// to one stream. r3labs only reads the stream name, Last-Event-ID (absent:
// nothing is replayed) and the context, so one read-only template per
// shard serves everyone.
func subscribeRequest(stream string) *http.Request {
	return &http.Request{
		Method: http.MethodGet,
		URL:    &url.URL{RawQuery: "stream=" + stream},
		Header: http.Header{},
	}
}

// Header returns a new map each time: what r3labs sets there is discarded
// (the caller set the real headers), and a map kept per listener would
// cost every idle listener a few hundred bytes.
func (s *subscription) Header() http.Header { return http.Header{} }
func (s *subscription) WriteHeader(int)     {}

// Write receives what r3labs prints for one batch, "id: \n",
// "data: <first>-<last>\n", "\n", or for a heartbeat ": hb\n", "\n", and
// queues the matching shared frames. The id line and the blank lines carry
// nothing: there are no ids (nothing is replayed) and frames end with their
// own blank line.
func (s *subscription) Write(p []byte) (int, error) {
	switch {
	case bytes.HasPrefix(p, []byte("data: ")):
		first, last, ok := parseRange(p[len("data: "):])
		if !ok {
			s.q.drop(errUnreadable)
			break
		}
		s.q.enqueueRange(first, last)
		s.sh.took(s, last)
	case bytes.HasPrefix(p, []byte(": ")):
		s.q.enqueue(heartbeatFrame)
	}
	return len(p), nil
}

// Flush marks the end of one batch: start a drain unless one is running.
// The first Flush comes from r3labs once the subscription is registered.
// It runs on the r3labs loop's goroutine, which is also the one that later
// calls finish (see Hub.stream).
func (s *subscription) Flush() {
	if !s.confirmed {
		s.confirmed = true
		s.sh.confirm(s)
	}
	s.q.startDrain()
}

// appendRange appends "first-last", the batch r3labs carries.
func appendRange(b []byte, first, last uint64) []byte {
	b = strconv.AppendUint(b, first, 10)
	b = append(b, '-')
	return strconv.AppendUint(b, last, 10)
}

// parseRange reads the batch r3labs printed, "first-last", up to the
// newline. Hand-rolled: it runs once per batch per listener and must not
// allocate.
func parseRange(b []byte) (first, last uint64, ok bool) {
	first, rest, ok := parseUint(b)
	if !ok || len(rest) == 0 || rest[0] != '-' {
		return 0, 0, false
	}
	last, rest, ok = parseUint(rest[1:])
	if !ok || (len(rest) > 0 && rest[0] != '\n') || last < first || last-first >= batchSize {
		return 0, 0, false
	}
	return first, last, true
}

func parseUint(b []byte) (uint64, []byte, bool) {
	var n uint64
	i := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		if i == 19 {
			return 0, nil, false
		}
		n = n*10 + uint64(b[i]-'0')
	}
	return n, b[i:], i > 0
}
