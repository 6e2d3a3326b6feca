package broadcast

import (
	"errors"
	"net/http"
	"os"
	"sync"
	"time"
)

// sink is where a listener's queue drains: the client's connection. The
// queue calls write from one goroutine at a time (its drain, then finish).
type sink interface {
	// write writes batch in order and counts in the listener's sent what
	// the client was given. Each write is bounded by the write timeout and
	// never outlasts the cut-off: a client that takes nothing fails it
	// (ErrStalled).
	write(batch []*frame) error
	// cut makes the write under way and every later one fail at deadline;
	// an earlier cut-off stays. Safe from any goroutine.
	cut(deadline time.Time)
	// settle waits until the drain goroutine counted by drainer has
	// finished, or can no longer touch the client's connection.
	settle(drainer *sync.WaitGroup)
	// end is what a stream the server ended gets last, or nil.
	end(cause error) *frame
	// armed reports a write deadline that disarm must clear once the
	// queue is empty; disarm clears it. Writer only.
	armed() bool
	disarm()
}

// sseSink writes a listener's frames, as they are, to an SSE response.
type sseSink struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	l  *listener // for its buffers, timeout and counters

	deadlineAt time.Time // when the write deadline was last pushed; writer only
	cutoff     cutoff
	// disarmIdle clears the write deadline whenever the queue empties.
	// HTTP/2 resets a stream the moment its write deadline passes, writing
	// or not: a quiet stream (no events, heartbeats rarer than
	// WRITE_TIMEOUT) would be cut. HTTP/1 only fails a write started after
	// it, so there the deadline stays, pushed at most once per refresh.
	disarmIdle bool
}

func (s *sseSink) armed() bool { return s.disarmIdle && !s.deadlineAt.IsZero() }

// disarm clears the write deadline, unless it is the cut-off: a stream
// still open then is to end at it.
func (s *sseSink) disarm() {
	s.cutoff.mu.Lock()
	if s.cutoff.at.IsZero() {
		_ = s.rc.SetWriteDeadline(time.Time{})
	}
	s.cutoff.mu.Unlock()
	s.deadlineAt = time.Time{}
}

// cutoff is the time no write of a listener may outlast, once the hub's
// Close has set one.
type cutoff struct {
	mu sync.Mutex
	at time.Time
}

// passed reports whether a cut-off is set and its time has come: a write
// that failed on its deadline then failed on the cut-off.
func (c *cutoff) passed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.at.IsZero() && !time.Now().Before(c.at)
}

// set runs apply and records deadline, unless an earlier cut-off is
// already set.
func (c *cutoff) set(deadline time.Time, apply func(time.Time)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || deadline.Before(c.at) {
		c.at = deadline
		apply(deadline)
	}
}

func (s *sseSink) settle(drainer *sync.WaitGroup) { drainer.Wait() } // every write has a deadline
func (s *sseSink) end(cause error) *frame         { return endFrame(cause) }

// write writes and flushes batch, coalescing frames into writes of up to
// maxBatch bytes, and counts what the socket took. Each write runs under a
// write deadline, so a socket that takes nothing fails the write within
// WRITE_TIMEOUT, while a slow reader that keeps taking maxBatch bytes per
// WRITE_TIMEOUT stays.
func (s *sseSink) write(batch []*frame) error {
	last, err := s.writeAll(batch)
	if err == nil {
		s.arm()
		err = s.rc.Flush()
	}
	if err == nil {
		s.l.sent.add(last)
	}
	switch {
	case err == nil:
		return nil
	case s.cutoff.passed():
		// The cut-off's write deadline, or the server closing the
		// connections still open at the same shutdown deadline.
		return ErrCutAtShutdown
	case errors.Is(err, os.ErrDeadlineExceeded): // over HTTP/2 too: net/http reports the stream's reset so
		return ErrStalled
	default:
		return errClientGone
	}
}

// arm pushes the write deadline to timeout from now, at most once per
// refresh (it costs a timer update), so a blocked write fails between
// timeout-refresh and timeout after it started. Once cut has set a cut-off,
// the deadline is that and stays.
func (s *sseSink) arm() {
	timeout := s.l.timeout
	refresh := min(time.Second, timeout/4)
	if now := time.Now(); now.Sub(s.deadlineAt) > refresh {
		s.cutoff.mu.Lock()
		if s.cutoff.at.IsZero() {
			_ = s.rc.SetWriteDeadline(now.Add(timeout))
		}
		s.cutoff.mu.Unlock()
		s.deadlineAt = now
	}
}

func (s *sseSink) cut(deadline time.Time) {
	s.cutoff.set(deadline, func(d time.Time) { _ = s.rc.SetWriteDeadline(d) })
}

// writeAll writes batch and returns the frames of its last write, which
// net/http may still hold until the flush. The frames of every earlier
// write are counted as sent as soon as it returns: a write of maxBatch bytes
// or more goes past net/http's buffers to the socket, so a client cut off
// later in a long batch has them, and the count says so.
func (s *sseSink) writeAll(batch []*frame) ([]*frame, error) {
	if len(batch) == 1 { // the common case: no copy
		s.arm()
		_, err := s.w.Write(batch[0].b)
		return batch, err
	}
	buf := s.l.bufs.get()
	defer s.l.bufs.put(buf)
	from := 0
	for i, f := range batch {
		*buf = append(*buf, f.b...)
		if i == len(batch)-1 {
			break
		}
		if len(*buf) >= maxBatch {
			s.arm()
			if _, err := s.w.Write(*buf); err != nil {
				return nil, err
			}
			s.l.sent.add(batch[from : i+1])
			from = i + 1
			*buf = (*buf)[:0]
		}
	}
	s.arm()
	_, err := s.w.Write(*buf)
	return batch[from:], err
}
