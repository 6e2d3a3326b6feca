// Package connlimit bounds the TCP connections a listener holds, in total
// and per client address, so that one client can never use up the
// process's file descriptors and everyone else always finds room.
//
// It wraps a plain [net.Listener] (TLS and HTTP/2 can wrap it in turn) and
// knows nothing of HTTP: the server tells it which connections are idle
// (accepted but waiting for a request, or kept alive between requests) and
// which are busy (a request, a stream, a hijacked connection). When a new
// connection would exceed a cap, the idle connection that has waited the
// longest is closed to make room (the newcomer's own, when its address is
// the one at its cap); a busy one is never touched. Only when nothing is
// idle is the newcomer refused, by closing it at once.
package connlimit

import (
	"container/list"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/pkg/access"
)

// Options are a Listener's caps.
type Options struct {
	// Max is the most connections held at once; 0 or less: no total cap.
	Max int
	// MaxPerClient is the most one client holds at once: an IPv4 address,
	// or an IPv6 /64 ([access.ClientKey]); 0 or less: no per-client cap.
	MaxPerClient int
	// Exempt lists peers held only to Max: proxies and load balancers
	// that carry many clients' connections.
	Exempt []netip.Prefix
	// Logger gets a warning, at most once per LogEvery, while connections
	// are being refused or closed to make room.
	Logger   zerolog.Logger
	LogEvery time.Duration // 0: 10 s
	// Name tells this listener's log lines apart ("public", "admin").
	Name string
}

// Reason is the cap that made a Listener refuse or close a connection.
type Reason int

const (
	// Total is Options.Max.
	Total Reason = iota
	// PerClient is Options.MaxPerClient.
	PerClient
	numReasons
)

// String is the reason as metrics label it.
func (r Reason) String() string { return [...]string{"total", "per_ip"}[r] }

// Stats are a Listener's counters.
type Stats struct {
	Open         int // connections held now
	Max          int
	MaxPerClient int
	Refused      [numReasons]uint64 // new connections closed at once, by cap
	ClosedIdle   [numReasons]uint64 // idle connections closed to make room, by cap
}

// Listener is a net.Listener that enforces Options. Its Accept returns only
// admitted connections; it calls [Listener.Idle] on each, so a connection
// that never sends a request is the first to go.
type Listener struct {
	net.Listener
	opts Options

	refused, closedIdle [numReasons]atomic.Uint64
	lastLog             atomic.Int64 // unix nanoseconds of the last warning

	mu      sync.Mutex
	open    int
	clients map[netip.Addr]*client // only clients with a connection open
	idle    list.List              // of *conn, longest idle at the front
}

type client struct {
	open int
	idle list.List // this client's share of Listener.idle, same order
}

// conn is an admitted connection. Its fields after Conn are guarded by the
// Listener's mu.
type conn struct {
	net.Conn
	l      *Listener
	key    netip.Addr
	exempt bool

	held       bool          // counted in open; false once closed or chosen to make room
	idle, mine *list.Element // in l.idle and in the client's idle; nil when busy
}

// New wraps ln.
func New(ln net.Listener, opts Options) *Listener {
	if opts.LogEvery <= 0 {
		opts.LogEvery = 10 * time.Second
	}
	return &Listener{Listener: ln, opts: opts, clients: map[netip.Addr]*client{}}
}

// Accept waits for the next connection within the caps. Connections over a
// cap are closed here and never returned.
func (l *Listener) Accept() (net.Conn, error) { return l.acceptFrom(l.Listener) }

func (l *Listener) acceptFrom(ln net.Listener) (net.Conn, error) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil, err
		}
		if ac := l.admit(c); ac != nil {
			return ac, nil
		}
	}
}

// Add returns ln, another port of the same process, with its connections
// held to l's caps and counted together with l's own: the descriptors are
// one budget whatever port a flood comes through. Its connections are
// marked idle and busy through l, like l's own; closing it closes ln only.
func (l *Listener) Add(ln net.Listener) net.Listener { return &added{Listener: ln, l: l} }

type added struct {
	net.Listener
	l *Listener
}

func (a *added) Accept() (net.Conn, error) { return a.l.acceptFrom(a.Listener) }

func (l *Listener) admit(c net.Conn) net.Conn {
	key, exempt := l.keyOf(c.RemoteAddr())
	l.mu.Lock()
	cl := l.clients[key]
	victim, reason, full := l.makeRoom(cl, exempt)
	if full {
		l.mu.Unlock()
		_ = c.Close()
		l.refused[reason].Add(1)
		l.warn()
		return nil
	}
	if cl == nil {
		cl = &client{}
		l.clients[key] = cl
	}
	ac := &conn{Conn: c, l: l, key: key, exempt: exempt, held: true}
	l.open++
	cl.open++
	l.setIdle(ac, cl)
	l.mu.Unlock()
	if victim != nil {
		_ = victim.Conn.Close() // outside the lock: its owner goroutine sees the error and ends
		l.closedIdle[reason].Add(1)
		l.warn()
	}
	return ac
}

// makeRoom picks the idle connection to close so that one more from cl
// fits, or reports that none can be closed. The victim is no longer held
// when it returns.
func (l *Listener) makeRoom(cl *client, exempt bool) (victim *conn, r Reason, full bool) {
	if !exempt && cl != nil && l.opts.MaxPerClient > 0 && cl.open >= l.opts.MaxPerClient {
		if cl.idle.Len() == 0 {
			return nil, PerClient, true
		}
		victim = cl.idle.Front().Value.(*conn)
		l.releaseLocked(victim)
		return victim, PerClient, false
	}
	if l.opts.Max > 0 && l.open >= l.opts.Max {
		if l.idle.Len() == 0 {
			return nil, Total, true
		}
		victim = l.idle.Front().Value.(*conn)
		l.releaseLocked(victim)
		return victim, Total, false
	}
	return nil, 0, false
}

func (l *Listener) keyOf(a net.Addr) (netip.Addr, bool) {
	var ip netip.Addr
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ = netip.AddrFromSlice(ta.IP)
	} else if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		ip = ap.Addr()
	}
	ip = ip.Unmap()
	for _, p := range l.opts.Exempt {
		if p.Contains(ip) {
			return access.ClientKey(ip), true
		}
	}
	return access.ClientKey(ip), false // an unknown address family shares the zero key
}

// Idle marks c, a connection this Listener accepted (or a TLS connection
// over one), as waiting for a request: it may be closed to make room.
// Connections of other listeners are ignored.
func (l *Listener) Idle(c net.Conn) {
	ac := l.own(c)
	if ac == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if ac.held && ac.idle == nil {
		l.setIdle(ac, l.clients[ac.key])
	}
}

// Busy marks c as serving a request, a stream or a protocol of its own:
// it is never closed to make room.
func (l *Listener) Busy(c net.Conn) {
	ac := l.own(c)
	if ac == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unsetIdle(ac)
}

func (l *Listener) setIdle(ac *conn, cl *client) {
	ac.idle = l.idle.PushBack(ac)
	ac.mine = cl.idle.PushBack(ac)
}

func (l *Listener) unsetIdle(ac *conn) {
	if ac.idle == nil {
		return
	}
	l.idle.Remove(ac.idle)
	l.clients[ac.key].idle.Remove(ac.mine)
	ac.idle, ac.mine = nil, nil
}

// releaseLocked stops counting ac.
func (l *Listener) releaseLocked(ac *conn) {
	if !ac.held {
		return
	}
	l.unsetIdle(ac)
	ac.held = false
	l.open--
	cl := l.clients[ac.key]
	if cl.open--; cl.open == 0 {
		delete(l.clients, ac.key)
	}
}

// own finds the connection this Listener accepted under c, unwrapping TLS.
func (l *Listener) own(c net.Conn) *conn {
	for {
		switch v := c.(type) {
		case *conn:
			if v.l == l {
				return v
			}
			return nil
		case interface{ NetConn() net.Conn }: // *tls.Conn
			c = v.NetConn()
		default:
			return nil
		}
	}
}

func (c *conn) Close() error {
	c.l.mu.Lock()
	c.l.releaseLocked(c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// Stats returns the Listener's counters.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	s := Stats{Open: l.open, Max: l.opts.Max, MaxPerClient: l.opts.MaxPerClient}
	l.mu.Unlock()
	for r := range numReasons {
		s.Refused[r] = l.refused[r].Load()
		s.ClosedIdle[r] = l.closedIdle[r].Load()
	}
	return s
}

// warn logs the counters, at most once per LogEvery: a flood must not
// become a flood of log lines.
func (l *Listener) warn() {
	now := time.Now().UnixNano()
	last := l.lastLog.Load()
	if now-last < int64(l.opts.LogEvery) || !l.lastLog.CompareAndSwap(last, now) {
		return
	}
	s := l.Stats()
	l.opts.Logger.Warn().Str("listener", l.opts.Name).Int("open", s.Open).
		Int("max", s.Max).Int("max_per_ip", s.MaxPerClient).
		Uint64("refused_total", s.Refused[Total]).Uint64("refused_per_ip", s.Refused[PerClient]).
		Uint64("idle_closed_total", s.ClosedIdle[Total]).Uint64("idle_closed_per_ip", s.ClosedIdle[PerClient]).
		Msg("connection cap reached: idle connections closed or new ones refused")
}
