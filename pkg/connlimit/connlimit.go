// Package connlimit bounds the TCP connections a listener holds, in total
// and per client address, so that one client can never use up the
// process's file descriptors and everyone else always finds room.
//
// It wraps a plain [net.Listener] (TLS and HTTP/2 can wrap it in turn) and
// knows nothing of HTTP: the server tells it which connections are idle
// (accepted but waiting for a request or a TLS handshake, or kept alive
// between requests), which are busy (a request in flight) and which carry
// a stream (an SSE listener, a gRPC server stream). When a new connection
// would exceed the per-address cap, that address's longest-idle connection
// is closed to make room. At the total cap, the longest-idle connection of
// the address holding the most connections is closed, provided it holds
// at least as many as the newcomer's would (else the newcomer's own idle
// one): one client's lone connection, slow to send its request, is closed
// last. When nothing qualifies, the longest-busy connection of the address
// with the most requests in flight is closed instead, provided that
// address holds more than its fair share of what streams leave (the cap
// less the connections carrying a stream, over the addresses holding a
// connection without one) and more connections than the newcomer's: a few
// addresses trickling request bodies cannot fill the port, even beside
// another's streams. A connection carrying a stream is never closed for room, nor one
// of a peer exempt from the per-address cap (a proxy carries everyone's
// requests). Only then is the newcomer refused, by closing it at once.
package connlimit

import (
	"container/heap"
	"container/list"
	"context"
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
	// Name tells this listener's log lines apart ("public", "admin");
	// a port added with [Listener.Add] has its own.
	Name string
	// Stuck, when set, lets Max make room, before anything else fails,
	// by closing the request in flight that has been so for longest,
	// whatever its address, once that is longer than Stuck: for a port
	// whose requests are answered within milliseconds (the admin port), a
	// request in flight that long is a client not reading its answer, and
	// one such client per address from many addresses would otherwise hold
	// every connection. Streams (long requests marked as such) are never
	// closed.
	Stuck time.Duration
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
	// ClosedBusy counts connections with a request in flight (not a
	// stream) closed to make room at the total cap: always the address
	// holding the most requests in flight, over its fair share.
	ClosedBusy uint64
	// StreamsRefused counts streams refused because their address, counting
	// the streams it multiplexes, was at MaxPerClient (AdmitStream).
	StreamsRefused uint64
}

// Listener is a net.Listener that enforces Options. Its Accept returns only
// admitted connections; it calls [Listener.Idle] on each, so a connection
// that never sends a request is the first to go.
type Listener struct {
	net.Listener
	opts Options

	refused, closedIdle [numReasons]atomic.Uint64
	closedBusy          atomic.Uint64
	streamsRefused      atomic.Uint64 // AdmitStream's refusals
	lastLog             atomic.Int64  // unix nanoseconds of the last warning

	mu      sync.Mutex
	open    int
	streams int                    // connections carrying a stream
	mixed   int                    // clients holding a connection that carries no stream
	clients map[netip.Addr]*client // only clients with a connection open
	busiest ranking                // clients with a request in flight, most first
	idlest  ranking                // clients with an idle connection, most connections first
}

type client struct {
	// open counts its connections, and the streams beyond the first of
	// each multiplexed connection (extra, [AdmitStream]).
	open, extra int
	streams     int       // of its connections, those carrying a stream
	idle        list.List // its idle connections, longest idle at the front
	// busy holds its connections with a request in flight that may be
	// closed for room (not exempt, no stream), longest busy at the front.
	busy list.List
	// ranks are its indexes in Listener.busiest (-1 when busy is empty)
	// and Listener.idlest (-1 when idle is empty).
	busyRank, idleRank int
}

// contested is how many of its connections carry no stream: those a
// share of the connections streams leave is measured against.
func (cl *client) contested() int { return cl.open - cl.extra - cl.streams }

// conn is an admitted connection. Its fields after name are guarded by the
// Listener's mu.
type conn struct {
	net.Conn
	l      *Listener
	key    netip.Addr
	exempt bool
	name   string // the port's, for the log

	held    bool          // counted in open; false once closed or chosen to make room
	idle    *list.Element // in the client's idle; nil unless idle
	busy    *list.Element // in the client's busy; nil unless busy, not exempt, no stream
	busyAt  time.Time     // when it became busy, for Options.Stuck
	streams int           // streams it carries; a connection with one is never closed for room
	extra   int           // streams beyond its first counted in its client's open (AdmitStream)
}

// New wraps ln.
func New(ln net.Listener, opts Options) *Listener {
	if opts.LogEvery <= 0 {
		opts.LogEvery = 10 * time.Second
	}
	l := &Listener{Listener: ln, opts: opts, clients: map[netip.Addr]*client{}}
	l.busiest = ranking{
		more: func(a, b *client) bool { return a.busy.Len() > b.busy.Len() },
		rank: func(cl *client) *int { return &cl.busyRank },
	}
	l.idlest = ranking{
		more: func(a, b *client) bool { return a.open > b.open },
		rank: func(cl *client) *int { return &cl.idleRank },
	}
	return l
}

// Accept waits for the next connection within the caps. Connections over a
// cap are closed here and never returned.
func (l *Listener) Accept() (net.Conn, error) { return l.acceptFrom(l.Listener, l.opts.Name) }

func (l *Listener) acceptFrom(ln net.Listener, name string) (net.Conn, error) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil, err
		}
		if ac := l.admit(c, name); ac != nil {
			return ac, nil
		}
	}
}

// Add returns ln, another port of the same process, with its connections
// held to l's caps and counted together with l's own: the descriptors are
// one budget whatever port a flood comes through. Its connections are
// marked idle, busy and streams through l, like l's own; the warnings for
// connections coming through it carry name. Closing it closes ln only.
func (l *Listener) Add(ln net.Listener, name string) net.Listener {
	return &added{Listener: ln, l: l, name: name}
}

type added struct {
	net.Listener
	l    *Listener
	name string
}

func (a *added) Accept() (net.Conn, error) { return a.l.acceptFrom(a.Listener, a.name) }

// closing is why a connection is closed to make room.
type closing int

const (
	closingNone closing = iota
	closingIdle
	closingBusy
)

func (l *Listener) admit(c net.Conn, name string) net.Conn {
	key, exempt := l.keyOf(c.RemoteAddr())
	l.mu.Lock()
	cl := l.clients[key]
	victim, reason, why := l.makeRoom(cl, exempt)
	if victim == nil && why != closingNone {
		l.mu.Unlock()
		l.refused[reason].Add(1) // counted before the client can see the close
		_ = c.Close()
		l.warn(name)
		return nil
	}
	if cl == nil {
		cl = &client{busyRank: -1, idleRank: -1}
		l.clients[key] = cl
	}
	ac := &conn{Conn: c, l: l, key: key, exempt: exempt, name: name, held: true}
	l.open++
	l.count(cl, 1, 0, 0)
	l.setIdle(ac, cl)
	l.mu.Unlock()
	if victim != nil {
		if why == closingBusy {
			l.closedBusy.Add(1)
		} else {
			l.closedIdle[reason].Add(1)
		}
		_ = victim.Conn.Close() // outside the lock: its owner goroutine sees the error and ends
		l.warn(name)
	}
	return ac
}

// makeRoom picks the connection to close so that one more from cl fits.
// why is closingNone when there is room already; a nil victim with another
// why means the newcomer must be refused. The victim is no longer held
// when it returns.
func (l *Listener) makeRoom(cl *client, exempt bool) (victim *conn, r Reason, why closing) {
	if !exempt && cl != nil && l.opts.MaxPerClient > 0 && cl.open >= l.opts.MaxPerClient {
		// The address at its own cap may only trade its own idle
		// connections: its requests in flight are its own business.
		if cl.idle.Len() == 0 {
			return nil, PerClient, closingIdle
		}
		victim = cl.idle.Front().Value.(*conn)
		l.releaseLocked(victim)
		return victim, PerClient, closingIdle
	}
	if l.opts.Max <= 0 || l.open < l.opts.Max {
		return nil, 0, closingNone
	}
	if victim = l.idleVictim(cl, exempt); victim != nil {
		l.releaseLocked(victim)
		return victim, Total, closingIdle
	}
	if victim = l.busyVictim(cl); victim == nil {
		victim = l.stuckVictim()
	}
	if victim != nil {
		l.releaseLocked(victim)
	}
	return victim, Total, closingBusy
}

// idleVictim is the longest-idle connection of the address holding the
// most connections among those with one idle, provided it holds at least
// as many as the newcomer's address would once admitted; else the
// newcomer's own longest-idle one. A flood of idle connections from a few
// addresses is thus paid by those addresses, and one client's lone
// connection, slow to send its request (a TLS handshake over a poor link),
// is closed last. An exempt peer (a proxy, carrying many clients'
// connections) is taken as holding none. Nil when no idle connection
// qualifies.
func (l *Listener) idleVictim(newcomer *client, exempt bool) *conn {
	if l.idlest.Len() == 0 {
		return nil
	}
	top, mine := l.idlest.list[0], 1
	if newcomer != nil && !exempt {
		mine += newcomer.open
	}
	if top != newcomer && top.open < mine {
		if newcomer == nil || newcomer.idle.Len() == 0 {
			return nil
		}
		top = newcomer
	}
	return top.idle.Front().Value.(*conn)
}

// busyVictim is the longest-busy connection of the address with the most
// requests in flight, when that address holds more than its fair share of
// what streams leave and more connections than the newcomer's address
// would once admitted: addresses over their share trade among themselves,
// never at the expense of one under it. The share is Max less the
// connections carrying a stream (never closed for room), over the
// addresses holding a connection without one, the newcomer's counted, and
// it is compared with what the address holds without its streams: an
// address holding most of Max in streams cannot make another's few
// trickled requests untouchable, while its streams still count in what it
// holds against a newcomer. Nil when no address qualifies.
func (l *Listener) busyVictim(newcomer *client) *conn {
	if l.busiest.Len() == 0 {
		return nil
	}
	top := l.busiest.list[0]
	holders, mine := l.mixed, 1
	if newcomer == nil || newcomer.contested() == 0 {
		holders++
	}
	if newcomer != nil {
		mine += newcomer.open
	}
	share := max(l.opts.Max-l.streams, 0) / holders
	if top == newcomer || top.contested() <= share || top.open <= mine {
		return nil
	}
	return top.busy.Front().Value.(*conn)
}

// stuckVictim is the request in flight for longest, of any address, once
// that is longer than Options.Stuck; nil without Stuck. It looks at every
// client: Stuck is for a port with few connections.
func (l *Listener) stuckVictim() *conn {
	if l.opts.Stuck <= 0 {
		return nil
	}
	var oldest *conn
	for _, cl := range l.clients {
		if cl.busy.Len() == 0 {
			continue
		}
		if c := cl.busy.Front().Value.(*conn); oldest == nil || c.busyAt.Before(oldest.busyAt) {
			oldest = c
		}
	}
	if oldest == nil || time.Since(oldest.busyAt) < l.opts.Stuck {
		return nil
	}
	return oldest
}

// count changes cl's connections by conns, those carrying a stream by
// streams and its extra streams by extra, and the Listener's counts of
// them.
func (l *Listener) count(cl *client, conns, streams, extra int) {
	was := cl.contested() > 0
	cl.open += conns + extra
	cl.extra += extra
	cl.streams += streams
	l.streams += streams
	if now := cl.contested() > 0; now != was {
		if now {
			l.mixed++
		} else {
			l.mixed--
		}
	}
	if conns != 0 || extra != 0 {
		l.idlest.fix(cl)
	}
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
// Connections of other listeners are ignored, and so is a connection still
// carrying a stream.
func (l *Listener) Idle(c net.Conn) {
	ac := l.own(c)
	if ac == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if ac.held && ac.idle == nil && ac.streams == 0 {
		cl := l.clients[ac.key]
		l.unsetBusy(ac, cl)
		l.setIdle(ac, cl)
	}
}

// Busy marks c as serving a request: it is not closed for an idle
// newcomer's room, only, at the total cap, when its address holds more
// than its share (see the package comment).
func (l *Listener) Busy(c net.Conn) {
	ac := l.own(c)
	if ac == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !ac.held {
		return
	}
	cl := l.clients[ac.key]
	l.unsetIdle(ac, cl)
	if ac.streams == 0 {
		l.setBusy(ac, cl)
	}
}

// Stream marks c as carrying a stream until release is called: it is
// never closed for room. Over HTTP/2 one connection carries many requests;
// while one of them is a stream the whole connection is kept. Calls nest.
// When c is not this Listener's, release does nothing.
func (l *Listener) Stream(c net.Conn) (release func()) {
	ac := l.own(c)
	if ac == nil {
		return func() {}
	}
	l.mu.Lock()
	l.markStream(ac)
	l.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { l.endStream(ac) }) }
}

// markStream counts one more stream on ac: its first takes it out of
// those that may be closed for room.
func (l *Listener) markStream(ac *conn) {
	if ac.streams++; ac.held && ac.streams == 1 {
		cl := l.clients[ac.key]
		l.unsetIdle(ac, cl)
		l.unsetBusy(ac, cl)
		l.count(cl, 0, 1, 0)
	}
}

// endStream: the connection goes on serving its request (the handler has
// not returned) until the server marks it idle.
func (l *Listener) endStream(ac *conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ac.streams--; ac.held && ac.streams == 0 {
		cl := l.clients[ac.key]
		l.count(cl, 0, -1, 0)
		if ac.idle == nil {
			l.setBusy(ac, cl)
		}
	}
}

type connKey struct{}

// ConnContext is an http.Server.ConnContext that records c in the
// connection's context, for [MarkStream] in its requests' handlers.
func (l *Listener) ConnContext(ctx context.Context, c net.Conn) context.Context {
	if ac := l.own(c); ac != nil {
		return context.WithValue(ctx, connKey{}, ac)
	}
	return ctx
}

// MarkStream marks the connection under ctx (a request's context, its
// connection recorded by [Listener.ConnContext]) as carrying a stream
// until release is called; see [Listener.Stream]. Without a recorded
// connection it does nothing.
func MarkStream(ctx context.Context) (release func()) {
	ac, _ := ctx.Value(connKey{}).(*conn)
	if ac == nil {
		return func() {}
	}
	return ac.l.Stream(ac)
}

func (l *Listener) setIdle(ac *conn, cl *client) {
	ac.idle = cl.idle.PushBack(ac)
	l.idlest.add(cl)
}

func (l *Listener) unsetIdle(ac *conn, cl *client) {
	if ac.idle == nil {
		return
	}
	cl.idle.Remove(ac.idle)
	ac.idle = nil
	if cl.idle.Len() == 0 {
		l.idlest.remove(cl)
	}
}

// setBusy files ac among its client's requests in flight that may be
// closed for room; an exempt peer's never are.
func (l *Listener) setBusy(ac *conn, cl *client) {
	if ac.busy != nil || ac.exempt {
		return
	}
	ac.busy = cl.busy.PushBack(ac)
	ac.busyAt = time.Now()
	l.busiest.add(cl)
}

func (l *Listener) unsetBusy(ac *conn, cl *client) {
	if ac.busy == nil {
		return
	}
	cl.busy.Remove(ac.busy)
	ac.busy = nil
	if cl.busy.Len() == 0 {
		l.busiest.remove(cl)
	} else {
		l.busiest.fix(cl)
	}
}

// ranking is a heap of clients, the one first for which more holds
// against every other; each client keeps its index in it at rank (-1
// when not in it).
type ranking struct {
	list []*client
	more func(a, b *client) bool
	rank func(*client) *int
}

// add puts cl in, or moves it to its place when it is in already.
func (h *ranking) add(cl *client) {
	if *h.rank(cl) < 0 {
		heap.Push(h, cl)
	} else {
		heap.Fix(h, *h.rank(cl))
	}
}

// fix moves cl to its place when it is in.
func (h *ranking) fix(cl *client) {
	if i := *h.rank(cl); i >= 0 {
		heap.Fix(h, i)
	}
}

func (h *ranking) remove(cl *client) {
	if i := *h.rank(cl); i >= 0 {
		heap.Remove(h, i)
	}
}

func (h *ranking) Len() int           { return len(h.list) }
func (h *ranking) Less(i, j int) bool { return h.more(h.list[i], h.list[j]) }
func (h *ranking) Swap(i, j int) {
	h.list[i], h.list[j] = h.list[j], h.list[i]
	*h.rank(h.list[i]), *h.rank(h.list[j]) = i, j
}
func (h *ranking) Push(x any) {
	cl := x.(*client)
	*h.rank(cl) = len(h.list)
	h.list = append(h.list, cl)
}
func (h *ranking) Pop() any {
	cl := h.list[len(h.list)-1]
	h.list[len(h.list)-1] = nil
	h.list, *h.rank(cl) = h.list[:len(h.list)-1], -1
	return cl
}

// releaseLocked stops counting ac.
func (l *Listener) releaseLocked(ac *conn) {
	if !ac.held {
		return
	}
	cl := l.clients[ac.key]
	l.unsetIdle(ac, cl)
	l.unsetBusy(ac, cl)
	ac.held = false
	l.open--
	streams := 0
	if ac.streams > 0 {
		streams = -1
	}
	l.count(cl, -1, streams, -ac.extra)
	if ac.extra = 0; cl.open == 0 {
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
	s.ClosedBusy = l.closedBusy.Load()
	s.StreamsRefused = l.streamsRefused.Load()
	return s
}

// warn logs the counters, at most once per LogEvery: a flood must not
// become a flood of log lines.
func (l *Listener) warn(name string) {
	now := time.Now().UnixNano()
	last := l.lastLog.Load()
	if now-last < int64(l.opts.LogEvery) || !l.lastLog.CompareAndSwap(last, now) {
		return
	}
	s := l.Stats()
	l.opts.Logger.Warn().Str("listener", name).Int("open", s.Open).
		Int("max", s.Max).Int("max_per_ip", s.MaxPerClient).
		Uint64("refused_total", s.Refused[Total]).Uint64("refused_per_ip", s.Refused[PerClient]).
		Uint64("idle_closed_total", s.ClosedIdle[Total]).Uint64("idle_closed_per_ip", s.ClosedIdle[PerClient]).
		Uint64("busy_closed", s.ClosedBusy).
		Msg("connection cap reached: idle connections closed or new ones refused")
}
