package access

import (
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// MaxTrackedClients bounds the per-client state of a [RateLimiter]: beyond
// it the client seen least recently is forgotten (and starts again with a
// full burst if it comes back). A forgotten bucket had usually refilled
// anyway: it refills within two seconds, and forgetting one that had not
// takes this many other clients publishing within those seconds.
const MaxTrackedClients = 65536

// ClientKey is the unit the per-client limits count: an IPv4 address, or
// the /64 of an IPv6 address, because one IPv6 subscriber is usually given
// a whole /64 and could otherwise rotate through 2^64 addresses.
func ClientKey(ip netip.Addr) netip.Addr { return mask(ip, 32, 64) }

// RateLimiter allows each client a sustained rate of events with a burst of
// twice that rate. A nil *RateLimiter allows everything.
//
// Its memory is bounded: past maxClients, the client seen least recently
// is forgotten. One holder of an IPv6 /48 owns 65,536 /64s, enough to
// churn every other client out (and to get a fresh burst with each /64).
// So once the limiter is half full, a /48 that already holds its share
// of buckets (maxClients/256, at least 4) gets one more bucket for the
// whole /48, shared by every /64 of it not tracked yet: it can no longer
// push anyone out, nor rate itself anew. The holder of a /32 (65,536 /48s,
// what a registry gives an ISP) is held the same way one level up: under
// pressure, a /32 whose /48s already hold buckets in maxClients/16 of them
// (at least the /48 share) gets one bucket for all its /48s not tracked
// yet; its /48s already tracked keep theirs. The /32 share is wider
// because a /32 is often one ISP's many customers: 4,096 of their sites
// keep buckets of their own with the default bound.
type RateLimiter struct {
	limit   rate.Limit
	burst   int
	max     int
	share48 int // buckets a /48 may hold under pressure
	share32 int // buckets a /32 may hold under pressure
	refused atomic.Uint64

	mu      sync.Mutex // guards clients, per48 and per32; each rate.Limiter has its own lock
	clients *simplelru.LRU[bucketKey, *rate.Limiter]
	per48   map[netip.Addr]int // buckets tracked per /48: its /64s' and its own
	per32   map[netip.Addr]int // /48s tracked (per48 not zero) per /32
}

// bucketKey is what one allowance is kept for: a client key
// ([ClientKey], bits 0), or a whole IPv6 /48 or /32 (bits 48, 32).
type bucketKey struct {
	addr netip.Addr
	bits uint8
}

// NewRateLimiter allows perSecond events per client, in bursts of up to
// twice as many (at least one), tracking at most maxClients clients (the
// least recent is forgotten first). It returns nil (no limit) when
// perSecond is not positive, and uses [MaxTrackedClients] when maxClients
// is not positive.
func NewRateLimiter(perSecond float64, maxClients int) *RateLimiter {
	if !(perSecond > 0) {
		return nil
	}
	if maxClients <= 0 {
		maxClients = MaxTrackedClients
	}
	burst := int(min(math.Ceil(2*perSecond), math.MaxInt32))
	share48 := max(maxClients/256, 4)
	l := &RateLimiter{
		limit: rate.Limit(perSecond), burst: max(1, burst), max: maxClients,
		share48: share48, share32: max(maxClients/16, share48),
		per48: map[netip.Addr]int{}, per32: map[netip.Addr]int{},
	}
	clients, err := simplelru.NewLRU(maxClients, func(k bucketKey, _ *rate.Limiter) { l.forget(k) })
	if err != nil {
		panic(err) // maxClients is positive
	}
	l.clients = clients
	return l
}

// Allow takes one event from ip's allowance at now. When there is none
// left it returns false and how long until there is.
func (l *RateLimiter) Allow(ip netip.Addr, now time.Time) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	lim := l.limiter(ip)
	if lim.AllowN(now, 1) {
		return true, 0
	}
	l.refused.Add(1)
	missing := 1 - lim.TokensAt(now)
	return false, time.Duration(missing / float64(l.limit) * float64(time.Second))
}

func (l *RateLimiter) limiter(ip netip.Addr) *rate.Limiter {
	key := bucketKey{addr: ClientKey(ip)}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lim, ok := l.clients.Get(key); ok {
		return lim
	}
	if key.addr.Is6() {
		p48, p32 := mask(ip, 32, 48), mask(ip, 32, 32)
		pressure := l.clients.Len() >= l.max/2
		switch {
		case pressure && l.per48[p48] == 0 && l.per32[p32] >= l.share32:
			key = bucketKey{addr: p32, bits: 32} // under pressure, the /32's new /48s share one
		case pressure && l.per48[p48] >= l.share48:
			key = bucketKey{addr: p48, bits: 48} // under pressure, the /48's new /64s share one
		}
		if key.bits != 0 {
			if lim, ok := l.clients.Get(key); ok {
				return lim
			}
		}
		if key.bits != 32 {
			if l.per48[p48]++; l.per48[p48] == 1 {
				l.per32[p32]++
			}
		}
	}
	lim := rate.NewLimiter(l.limit, l.burst)
	l.clients.Add(key, lim) // may forget the least recent: forget keeps per48 and per32 right
	return lim
}

// forget updates per48 and per32 when a bucket is dropped.
func (l *RateLimiter) forget(k bucketKey) {
	if !k.addr.Is6() {
		return
	}
	if k.bits == 32 {
		return
	}
	if decrement(l.per48, mask(k.addr, 32, 48)) {
		decrement(l.per32, mask(k.addr, 32, 32))
	}
}

// decrement counts one less under p, forgetting p at zero, which it
// reports.
func decrement(counts map[netip.Addr]int, p netip.Addr) (gone bool) {
	if n := counts[p]; n > 1 {
		counts[p] = n - 1
		return false
	}
	delete(counts, p)
	return true
}

// Tracked is the number of clients whose allowance is remembered.
func (l *RateLimiter) Tracked() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.clients.Len()
}

// Refused counts the events refused since start.
func (l *RateLimiter) Refused() uint64 {
	if l == nil {
		return 0
	}
	return l.refused.Load()
}

// StreamLimiter caps the streams one client holds open at once. It
// remembers only clients with a stream open, so its size never exceeds the
// number of open streams. A nil *StreamLimiter allows everything.
type StreamLimiter struct {
	max    int
	shared bool // max is the share NewStreamShare derived, not MAX_LISTENERS_PER_IP
	// For a share: streams open, every client; once they reach max, the
	// rest (the reserve) goes one slot per client holding none. Guarded by
	// mu.
	total   int
	refused atomic.Uint64
	warned  atomic.Int64 // unix nanoseconds of the last WarnShare line

	mu   sync.Mutex
	open map[netip.Addr]int // never holds a zero count
}

// NewStreamLimiter allows perClient concurrent streams per client; nil (no
// limit) when perClient is not positive.
func NewStreamLimiter(perClient int) *StreamLimiter {
	if perClient <= 0 {
		return nil
	}
	return &StreamLimiter{max: perClient, open: map[netip.Addr]int{}}
}

// NewStreamShare is the default when no per-client cap is set: one client
// may hold every listener slot but a reserve kept for the others, so that
// a few multiplexed connections from one address cannot take them all,
// while one proxy not declared as such still carries all but the reserve.
// See [StreamShare]; nil (no limit) when it leaves no reserve.
func NewStreamShare(listeners int) *StreamLimiter {
	share := StreamShare(listeners)
	if share >= listeners {
		return nil
	}
	return &StreamLimiter{max: share, shared: true, open: map[netip.Addr]int{}}
}

// StreamShare is what one client may hold of listeners slots by default:
// all but a reserve of 1 % (rounded down): 9,900 of 10,000, 990 of 1,000,
// 99 of 100, all under 100. No more than 1 %, so that a deployment behind
// one proxy it has not declared, whose clients all share its address,
// loses no more than that. The reserve itself goes one slot to each
// client holding no stream, so that filling it takes as many addresses as
// it has slots (100 of 10,000), not a second one.
func StreamShare(listeners int) int {
	return listeners - listeners/100
}

// Shared tells a limiter from NewStreamShare.
func (l *StreamLimiter) Shared() bool { return l != nil && l.shared }

// WarnShare logs, at most once per 10 s, that a stream from ip was refused
// for its share: the usual cause is a proxy in front of the service that is
// not declared, whose address every client shares.
func (l *StreamLimiter) WarnShare(log zerolog.Logger, ip netip.Addr) {
	now, last := time.Now().UnixNano(), l.warned.Load()
	if now-last < int64(10*time.Second) || !l.warned.CompareAndSwap(last, now) {
		return
	}
	log.Warn().Str("client_ip", ip.String()).Int("share", l.max).Uint64("refused_total", l.refused.Load()).
		Msg("stream refused: this address holds its share of the listener slots (MAX_SUBSCRIBERS less a reserve kept for other addresses); " +
			"if it is a proxy or load balancer, list it in TRUSTED_PROXY_CIDRS so that each client behind it has its own share, or set MAX_LISTENERS_PER_IP")
}

// Max is the most streams one client holds.
func (l *StreamLimiter) Max() int {
	if l == nil {
		return 0
	}
	return l.max
}

// Acquire counts one more stream for ip, or returns false when ip already
// holds the maximum. Every true must be followed by one [StreamLimiter.Release]
// when that stream ends.
func (l *StreamLimiter) Acquire(ip netip.Addr) bool {
	if l == nil {
		return true
	}
	key := ClientKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	held := l.open[key]
	if held >= l.max || (l.shared && l.total >= l.max && held > 0) {
		l.refused.Add(1)
		return false
	}
	l.open[key]++
	l.total++
	return true
}

// Release counts one stream of ip as ended.
func (l *StreamLimiter) Release(ip netip.Addr) {
	if l == nil {
		return
	}
	key := ClientKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch n := l.open[key]; {
	case n > 1:
		l.open[key] = n - 1
	case n == 1:
		delete(l.open, key)
	default:
		panic("access: Release without Acquire")
	}
	l.total--
}

// Open is the number of streams ip holds open.
func (l *StreamLimiter) Open(ip netip.Addr) int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open[ClientKey(ip)]
}

// Tracked is the number of clients with a stream open.
func (l *StreamLimiter) Tracked() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.open)
}

// Refused counts the streams refused since start.
func (l *StreamLimiter) Refused() uint64 {
	if l == nil {
		return 0
	}
	return l.refused.Load()
}
