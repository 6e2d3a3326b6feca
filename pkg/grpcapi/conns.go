package grpcapi

import (
	"context"
	"net"
	"sync"

	"google.golang.org/grpc/stats"
)

// ConnTracker is told which of the port's connections are serving a call,
// which carry a stream and which are idle (connlimit.Listener): under its
// caps an idle one is closed first to make room, one serving a call only
// when its address holds more than its share, one carrying a stream never.
type ConnTracker interface {
	Idle(net.Conn)
	Busy(net.Conn)
	Stream(net.Conn) (release func())
}

// connStates turns gRPC's view of a connection (its calls, seen by a stats
// handler) into Idle and Busy: grpc-go has no ConnState hook like
// net/http's. A connection is busy from the start of its first call to the
// end of its last, and one between calls, or still in its handshake, is
// idle. A server-streaming call (a subscription, a health Watch) marks its
// connection as a stream until it ends: never closed for room, with every
// call it carries. The stats handler is told a connection's addresses only, so the
// listener records each accepted connection by them.
type connStates struct {
	tr ConnTracker

	mu    sync.Mutex
	conns map[connKey]net.Conn // accepted and not yet closed
}

type connKey struct{ local, remote string }

func keyOf(local, remote net.Addr) connKey {
	return connKey{local.String(), remote.String()}
}

// listen records the connections ln accepts until they close.
func (s *connStates) listen(ln net.Listener) net.Listener { return &recordingListener{ln, s} }

type recordingListener struct {
	net.Listener
	s *connStates
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	k := keyOf(c.LocalAddr(), c.RemoteAddr())
	l.s.mu.Lock()
	l.s.conns[k] = c
	l.s.mu.Unlock()
	return &recordedConn{Conn: c, s: l.s, key: k}, nil
}

type recordedConn struct {
	net.Conn
	s    *connStates
	key  connKey
	once sync.Once
}

func (c *recordedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c.key)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

// calls counts one connection's calls in flight.
type calls struct {
	conn net.Conn
	mu   sync.Mutex // orders Busy and Idle as the count moves
	n    int
}

type callsKey struct{}

func (s *connStates) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	if info.LocalAddr == nil || info.RemoteAddr == nil {
		return ctx
	}
	s.mu.Lock()
	c := s.conns[keyOf(info.LocalAddr, info.RemoteAddr)]
	s.mu.Unlock()
	if c == nil {
		return ctx
	}
	return context.WithValue(ctx, callsKey{}, &calls{conn: c})
}

func (s *connStates) HandleRPC(ctx context.Context, st stats.RPCStats) {
	cs, _ := ctx.Value(callsKey{}).(*calls)
	if cs == nil {
		return
	}
	switch st := st.(type) {
	case *stats.Begin:
		cs.mu.Lock()
		if cs.n++; cs.n == 1 {
			s.tr.Busy(cs.conn)
		}
		if rs, _ := ctx.Value(rpcKey{}).(*rpcStream); rs != nil && st.IsServerStream {
			rs.release = s.tr.Stream(cs.conn)
		}
		cs.mu.Unlock()
	case *stats.End:
		cs.mu.Lock()
		if rs, _ := ctx.Value(rpcKey{}).(*rpcStream); rs != nil && rs.release != nil {
			rs.release()
			rs.release = nil
		}
		if cs.n--; cs.n == 0 {
			s.tr.Idle(cs.conn)
		}
		cs.mu.Unlock()
	}
}

// rpcStream holds a server-streaming call's release of its connection's
// stream mark, guarded by its connection's calls.mu.
type rpcStream struct{ release func() }

type rpcKey struct{}

func (s *connStates) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	if ctx.Value(callsKey{}) == nil {
		return ctx
	}
	return context.WithValue(ctx, rpcKey{}, &rpcStream{})
}
func (s *connStates) HandleConn(context.Context, stats.ConnStats) {}
