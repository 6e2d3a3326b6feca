package broadcast

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/r3labs/sse/v2"
)

// The r3labs adapter: the only code that knows github.com/r3labs/sse/v2.
// The data path reads: Publish (hub.go) numbers a frame → the pump hands
// runs of numbers to r3labs streams (here) → r3labs' loop per subscriber
// prints each run into the listener's stand-in response (here), which
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

// subscribe feeds w, the r3labs side of l, from the r3labs stream of
// shard sh until ctx ends. The caller then calls sh.leave(l).
func (h *Hub) subscribe(ctx context.Context, sh *shard, w http.ResponseWriter, l *listener) {
	sh.join(l)
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
func (l *listener) Header() http.Header { return http.Header{} }
func (l *listener) WriteHeader(int)     {}

// Write receives what r3labs prints for one batch, "id: \n",
// "data: <first>-<last>\n", "\n", or for a heartbeat ": hb\n", "\n", and
// queues the matching shared frames. The id line and the blank lines carry
// nothing: there are no ids (nothing is replayed) and frames end with their
// own blank line.
func (l *listener) Write(p []byte) (int, error) {
	switch {
	case bytes.HasPrefix(p, []byte("data: ")):
		first, last, ok := parseRange(p[len("data: "):])
		if !ok {
			l.drop(errUnreadable)
			break
		}
		l.enqueueRange(first, last)
		l.sh.took(l, last)
	case bytes.HasPrefix(p, []byte(": ")):
		l.enqueue(heartbeatFrame)
	}
	return len(p), nil
}

// Flush marks the end of one batch: start a drain unless one is running.
// The first Flush comes from r3labs once the subscription is registered.
func (l *listener) Flush() {
	if !l.confirmed {
		l.confirmed = true
		l.sh.confirm(l)
	}
	l.mu.Lock()
	start := !l.writing && !l.dead && len(l.pending) > 0
	l.writing = l.writing || start
	l.mu.Unlock()
	if start {
		// Add happens on the r3labs loop's goroutine, which is also the one
		// that later calls drainer.Wait, so the two never race.
		l.drainer.Add(1)
		go l.drainFn()
	}
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
