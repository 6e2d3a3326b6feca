package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// listener is one SSE client on its own TCP connection. It speaks plain
// HTTP/1.1 through net/http's request writer and response parser (chunked
// decoding included) but without an http.Client, so each listener costs one
// goroutine and two buffers: ten thousand of them leave the CPU to the
// server under test.
type listener struct {
	id      int
	replica int           // index of the -url it is connected to
	conn    io.Closer     // its connection, or over HTTP/2 its stream
	r       *bufio.Reader // the decoded response body
	long    []byte        // a line longer than r's buffer
	data    []byte        // data of the event being read

	closing  atomic.Bool // we are closing it: read errors are expected
	departed atomic.Bool // closed on purpose mid-run (mass disconnect): owed nothing
	lost     atomic.Bool // the stream ended before we closed it
	done     chan struct{}

	mu    sync.Mutex // guards everything below: the reader and the phase coordinator
	acct  *listenerAcct
	cause error // why the stream ended, when lost
}

// listenerAcct is what one listener counted during one phase. The
// listener is owed every event of the phase from sequence number base+from
// on: events taken by a publisher after its stream had started.
type listenerAcct struct {
	base, limit uint64 // this phase's sequence numbers are [base, base+limit)
	from        uint64 // owed from base+from on; earlier ones may arrive or not
	until       uint64 // with bounded: owed only before base+until (lost before it was to leave)
	bounded     bool
	hist        *histogram
	windows     *windows // survivors of a mass disconnect: latency by publish time
	seen        seqSet
	unique      uint64 // owed events received
	dups        uint64
	lastByPub   []uint64 // 1 + the last sequence number received from each publisher
	outOfOrder  uint64   // received after a later event of the same publisher
	stale       uint64   // from an earlier phase, arriving after it was counted
	foreign     uint64   // events not sent by this run
	latSum      int64
	latMax      int64
}

// streamRequest is the GET the real consumer sends, Content-Type included.
func streamRequest(target *url.URL) *http.Request {
	req, _ := http.NewRequest(http.MethodGet, target.String(), nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "event-dispatcher-loadtest")
	return req
}

// dial opens a TCP (or TLS, configured by tc) connection to target's host. rcvBuf > 0 sets
// the socket's receive buffer before connecting, which also turns off the
// kernel's autotuning of it.
func dial(ctx context.Context, target *url.URL, tc *tls.Config, rcvBuf int) (net.Conn, error) {
	host := target.Host
	if target.Port() == "" {
		port := "80"
		if target.Scheme == "https" {
			port = "443"
		}
		host = net.JoinHostPort(target.Hostname(), port)
	}
	nd := &net.Dialer{}
	if rcvBuf > 0 {
		nd.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvBuf)
			})
			return cmpOrNil(err, serr)
		}
	}
	if target.Scheme == "https" {
		conf := tc.Clone()
		conf.ServerName, conf.NextProtos = target.Hostname(), []string{"http/1.1"}
		d := &tls.Dialer{NetDialer: nd, Config: conf}
		return d.DialContext(ctx, "tcp", host)
	}
	return nd.DialContext(ctx, "tcp", host)
}

// statusError is a stream request answered with something else than 200.
type statusError struct{ code int }

func (e statusError) Error() string { return "HTTP " + strconv.Itoa(e.code) }

// connectListener opens a stream and returns once its first line has been
// read: both the product and the reference hub send one as soon as the
// listener is subscribed, so every event published afterwards must reach
// it. The caller starts [listener.run].
func connectListener(ctx context.Context, id, replica int, target *url.URL, tc *tls.Config, bufSize int, timeout time.Duration) (*listener, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dial(ctx, target, tc, 0)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	l, err := handshake(conn, id, target, bufSize)
	if !stop() || err != nil {
		_ = conn.Close()
		return nil, cmpOr(err, ctx.Err())
	}
	l.replica = replica
	return l, nil
}

func cmpOr(err, fallback error) error {
	return cmpOrNil(err, fallback, errors.New("connect timed out"))
}

// cmpOrNil returns the first error that is not nil, or nil.
func cmpOrNil(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func handshake(conn net.Conn, id int, target *url.URL, bufSize int) (*listener, error) {
	req := streamRequest(target)
	if err := req.Write(conn); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, bufSize), req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError{resp.StatusCode}
	}
	l := &listener{id: id, conn: conn, r: bufio.NewReaderSize(resp.Body, bufSize), done: make(chan struct{})}
	if _, err := l.readLine(); err != nil {
		return nil, fmt.Errorf("no first line: %w", err)
	}
	return l, nil
}

// readLine returns the next line without its end of line. It is valid until
// the next call.
func (l *listener) readLine() ([]byte, error) {
	line, err := l.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		l.long = append(l.long[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			line, err = l.r.ReadSlice('\n')
			l.long = append(l.long, line...)
		}
		line = l.long
	}
	if err != nil {
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// run reads events until the connection ends. It follows the SSE format:
// data lines are joined with a newline, a blank line dispatches, comments
// and other fields are ignored.
func (l *listener) run() {
	defer close(l.done)
	hasData := false
	for {
		line, err := l.readLine()
		if err != nil {
			if !l.closing.Load() {
				l.mu.Lock()
				l.cause = err
				l.mu.Unlock()
				l.lost.Store(true)
			}
			return
		}
		switch {
		case len(line) == 0:
			if hasData {
				l.deliver(l.data, time.Now().UnixNano())
			}
			l.data, hasData = l.data[:0], false
		case line[0] == ':':
		default:
			field, value, _ := bytes.Cut(line, []byte(":"))
			value = bytes.TrimPrefix(value, []byte(" "))
			if string(field) == "data" {
				if hasData {
					l.data = append(l.data, '\n')
				}
				l.data, hasData = append(l.data, value...), true
			}
		}
	}
}

// deliver counts one received event.
func (l *listener) deliver(data []byte, now int64) {
	st, ok := parseStamp(data)
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.acct
	switch {
	case a == nil:
		return // between phases: nobody counts
	case !ok:
		a.foreign++
	case st.seq < a.base:
		a.stale++
	case st.seq-a.base >= a.limit:
		a.foreign++
	case !a.seen.add(st.seq - a.base):
		a.dups++
	default:
		// Each publisher waits for an answer before its next POST: its
		// events must arrive in the order it sent them. Late, an event
		// still counts as delivered.
		if !a.inOrder(st) {
			a.outOfOrder++
		}
		if st.seq-a.base < a.from {
			return // sent while its stream was starting: welcome, not owed, not timed
		}
		a.unique++
		lat := max(now-st.sentNS, 0)
		a.hist.record(lat)
		a.latSum += lat
		a.latMax = max(a.latMax, lat)
		if a.windows != nil {
			a.windows.record(st.sentNS, lat)
		}
	}
}

// inOrder records st as the last event of its publisher and reports
// whether no later event of that publisher came before it.
func (a *listenerAcct) inOrder(st stamp) bool {
	if st.pub < 0 || st.pub >= int64(len(a.lastByPub)) {
		return true // not one of this run's publishers
	}
	last := &a.lastByPub[st.pub]
	if st.seq < *last {
		return false
	}
	*last = st.seq + 1
	return true
}

// startPhase makes the listener count the sequence numbers of ph, owed
// from base+from on, into a fresh account, reusing the previous one's
// memory.
func (l *listener) startPhase(ph *phase, from uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var seen seqSet
	if l.acct != nil {
		seen.words = l.acct.seen.words[:0]
		clear(l.acct.seen.words)
	}
	l.acct = &listenerAcct{
		base: ph.base, limit: ph.limit, from: from,
		hist: ph.hists[l.replica].shard(l.id), seen: seen, lastByPub: make([]uint64, ph.publishers),
	}
	switch {
	case ph.windows != nil && l.id < ph.survivors:
		l.acct.windows = ph.windows
	case ph.leaving != nil:
		l.acct.hist = ph.leaving.shard(l.id)
	}
}

// endPhase stops counting and returns the phase's account.
func (l *listener) endPhase() *listenerAcct {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.acct
	l.acct = nil
	return a
}

// progress returns how many owed events the listener has received in the
// current phase, and the sequence number (relative) it is owed from.
func (l *listener) progress() (got, from uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.acct == nil {
		return 0, 0
	}
	return l.acct.unique, l.acct.from
}

// depart closes the listener's connection on purpose in the middle of a
// phase, without waiting for its reader: it is owed nothing any more. One
// the server had already dropped is not departed but stays lost, owed the
// events taken before until (the moment it was to leave): a server that
// drops everyone before a mass disconnect must not pass for one that kept
// them. close still has to be called.
func (l *listener) depart(until uint64) {
	l.closing.Store(true)
	if l.lost.Load() {
		l.mu.Lock()
		if l.acct != nil {
			l.acct.until, l.acct.bounded = until, true
		}
		l.mu.Unlock()
		return
	}
	l.departed.Store(true)
	_ = l.conn.Close()
}

func (l *listener) close() {
	l.closing.Store(true)
	_ = l.conn.Close()
	<-l.done
}

// stalledConn is a listener that subscribes and then never reads, like a
// frozen client: the server must drop it without hurting anyone else. Its
// small receive buffer stands for a client whose kernel buffer is already
// full: loopback autotuning would otherwise absorb tens of megabytes before
// the server could notice anything.
type stalledConn struct {
	conn  net.Conn
	resp  *http.Response // its stream, read only from the first dropped on
	once  sync.Once
	ended chan struct{} // closed when the stream has ended
}

// openStalled subscribes and reads no more than the response head: a
// stream refused (503 over MAX_SUBSCRIBERS) is a failed listener, not one
// the server dropped later.
func openStalled(ctx context.Context, target *url.URL, tc *tls.Config, rcvBuf int, timeout time.Duration) (*stalledConn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dial(ctx, target, tc, rcvBuf)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	req := streamRequest(target)
	if err := req.Write(conn); err != nil {
		_ = conn.Close()
		return nil, err
	}
	// The smallest buffer: the head and a few bytes of the stream.
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 16), req)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = statusError{resp.StatusCode}
	}
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return &stalledConn{conn: conn, resp: resp}, nil
}

// dropped reads what the server managed to send, from now on to the end,
// and reports whether the server ends the stream within wait: closes or
// resets the connection, or finishes the response (a keep-alive connection
// outlives its stream). The reading goes on after it returns.
func (s *stalledConn) dropped(wait time.Duration) bool {
	s.once.Do(func() {
		s.ended = make(chan struct{})
		go func() {
			defer close(s.ended)
			_, _ = io.Copy(io.Discard, s.resp.Body)
		}()
	})
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-s.ended:
		return true
	case <-timer.C:
		return false
	}
}

func (s *stalledConn) close() { _ = s.conn.Close() }
