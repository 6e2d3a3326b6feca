package access

import (
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
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
type RateLimiter struct {
	limit   rate.Limit
	burst   int
	refused atomic.Uint64

	mu      sync.Mutex // guards clients; each rate.Limiter has its own lock
	clients *simplelru.LRU[netip.Addr, *rate.Limiter]
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
	clients, err := simplelru.NewLRU[netip.Addr, *rate.Limiter](maxClients, nil)
	if err != nil {
		panic(err) // maxClients is positive
	}
	burst := int(min(math.Ceil(2*perSecond), math.MaxInt32))
	return &RateLimiter{limit: rate.Limit(perSecond), burst: max(1, burst), clients: clients}
}

// Allow takes one event from ip's allowance at now. When there is none
// left it returns false and how long until there is.
func (l *RateLimiter) Allow(ip netip.Addr, now time.Time) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	lim := l.limiter(ClientKey(ip))
	if lim.AllowN(now, 1) {
		return true, 0
	}
	l.refused.Add(1)
	missing := 1 - lim.TokensAt(now)
	return false, time.Duration(missing / float64(l.limit) * float64(time.Second))
}

func (l *RateLimiter) limiter(key netip.Addr) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.clients.Get(key)
	if !ok {
		lim = rate.NewLimiter(l.limit, l.burst)
		l.clients.Add(key, lim)
	}
	return lim
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
	max     int
	refused atomic.Uint64

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
	if l.open[key] >= l.max {
		l.refused.Add(1)
		return false
	}
	l.open[key]++
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
