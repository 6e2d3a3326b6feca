package access_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"event-dispatcher/pkg/access"
)

const (
	staticToken = "listener-token-0123456789"
	jwtKey      = "0123456789abcdef0123456789abcdef-jwt-key"
)

func signHS256(t *testing.T, key string, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAuthCheck(t *testing.T) {
	a := access.NewAuth([]string{"other-token-abcdefghijkl", staticToken}, []byte(jwtKey))
	future := time.Now().Add(time.Hour).Unix()
	valid := signHS256(t, jwtKey, jwt.MapClaims{"exp": future, "sub": "dashboard"})
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + signedPayload(t, `{"exp":`+fmt.Sprint(future)+`,"sub":"admin"}`) + "." + parts[2]
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"exp": future}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	hs512, err := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.MapClaims{"exp": future}).SignedString([]byte(jwtKey))
	if err != nil {
		t.Fatal(err)
	}
	crit := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": future})
	crit.Header["crit"] = []string{"exp"} // an extension this service does not implement
	critical, err := crit.SignedString([]byte(jwtKey))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, token string
		want        error
	}{
		{"static token", staticToken, nil},
		{"valid JWT", valid, nil},
		{"empty", "", access.ErrMissing},
		{"static token with a suffix", staticToken + "x", access.ErrInvalid},
		{"static token prefix", staticToken[:10], access.ErrInvalid},
		{"expired JWT", signHS256(t, jwtKey, jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()}), access.ErrInvalid},
		{"JWT without exp", signHS256(t, jwtKey, jwt.MapClaims{"sub": "dashboard"}), access.ErrInvalid},
		{"JWT not yet valid", signHS256(t, jwtKey, jwt.MapClaims{"exp": future, "nbf": future}), access.ErrInvalid},
		{"JWT with the wrong key", signHS256(t, "another-key-of-at-least-32-bytes!!", jwt.MapClaims{"exp": future}), access.ErrInvalid},
		{"alg none", none, access.ErrInvalid},
		{"HS512 with the right key", hs512, access.ErrInvalid},
		{"tampered payload", tampered, access.ErrInvalid},
		{"the JWT key itself", jwtKey, access.ErrInvalid},
		{"JWT issued an hour from now", signHS256(t, jwtKey, jwt.MapClaims{"exp": future, "iat": future}), access.ErrInvalid},
		{"JWT issued within the clock skew", signHS256(t, jwtKey, jwt.MapClaims{"exp": future, "iat": time.Now().Add(access.MaxClockSkew / 2).Unix()}), nil},
		{"JWT issued in the past", signHS256(t, jwtKey, jwt.MapClaims{"exp": future, "iat": time.Now().Add(-time.Hour).Unix()}), nil},
		{"JWT with a crit header", critical, access.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := a.Check(tc.token)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Errorf("Check = %v, want %v", err, tc.want)
			}
			// The client is told "invalid token" and no more; the log, why.
			if tc.want == access.ErrInvalid && (err.Error() != "invalid token" || access.Reason(err) != reasons[tc.name]) {
				t.Errorf("Check = %q, reason %q; want \"invalid token\", reason %q", err, access.Reason(err), reasons[tc.name])
			}
		})
	}
}

// reasons are what the server logs for each refused token of TestAuthCheck.
var reasons = map[string]string{
	"static token with a suffix":  "neither one of LISTEN_TOKENS nor a JWT",
	"static token prefix":         "neither one of LISTEN_TOKENS nor a JWT",
	"expired JWT":                 "JWT expired",
	"JWT without exp":             "JWT without exp",
	"JWT not yet valid":           "JWT not valid yet (nbf)",
	"JWT with the wrong key":      "JWT signature invalid (not signed with LISTEN_JWT_SECRET)",
	"alg none":                    "JWT algorithm none refused",
	"HS512 with the right key":    "JWT algorithm not HS256",
	"tampered payload":            "JWT signature invalid (not signed with LISTEN_JWT_SECRET)",
	"the JWT key itself":          "neither one of LISTEN_TOKENS nor a JWT",
	"JWT issued an hour from now": "JWT issued (iat) in the future",
	"JWT with a crit header":      "JWT with a crit header",
}

// signedPayload base64url-encodes a JWT payload.
func signedPayload(t *testing.T, payload string) string {
	t.Helper()
	return base64.RawURLEncoding.EncodeToString([]byte(payload))
}

func TestAuthModes(t *testing.T) {
	if a := access.NewAuth(nil, nil); a.Required() || a.Check("") != nil {
		t.Error("without tokens or key, anyone must be let in")
	}
	onlyJWT := access.NewAuth(nil, []byte(jwtKey))
	if !onlyJWT.Required() {
		t.Fatal("a JWT key alone must require tokens")
	}
	if err := onlyJWT.Check(signHS256(t, jwtKey, jwt.MapClaims{"exp": time.Now().Add(time.Minute).Unix()})); err != nil {
		t.Errorf("valid JWT refused: %v", err)
	}
	onlyStatic := access.NewAuth([]string{staticToken}, nil)
	if err := onlyStatic.Check(signHS256(t, jwtKey, jwt.MapClaims{"exp": time.Now().Add(time.Minute).Unix()})); !errors.Is(err, access.ErrInvalid) {
		t.Errorf("a JWT with no key configured: %v, want ErrInvalid", err)
	}
}

func TestAnonymize(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.77":               "203.0.113.0",
		"10.1.2.3":                   "10.1.2.0",
		"::ffff:203.0.113.77":        "203.0.113.0",
		"2001:db8:abcd:12:1:2:3:4":   "2001:db8:abcd::",
		"2001:db8:abcd:ffff::1%eth0": "2001:db8:abcd::",
		"::1":                        "::",
	} {
		if got := access.Anonymize(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("Anonymize(%s) = %s, want %s", in, got, want)
		}
	}
	if got := access.Anonymize(netip.Addr{}); got.IsValid() {
		t.Errorf("Anonymize(invalid) = %v", got)
	}
}

func TestRateLimiterPerClient(t *testing.T) {
	l := access.NewRateLimiter(5, 0) // burst 10
	now := time.Unix(1e9, 0)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for i := range 10 {
		if ok, _ := l.Allow(a, now); !ok {
			t.Fatalf("event %d of the burst refused", i+1)
		}
	}
	ok, wait := l.Allow(a, now)
	if ok {
		t.Fatal("event 11 within the same instant allowed: burst is twice the rate")
	}
	if wait != 200*time.Millisecond {
		t.Errorf("wait %v, want 200ms (one event at 5/s)", wait)
	}
	if ok, _ := l.Allow(b, now); !ok {
		t.Error("another client was limited by the first one's flood")
	}
	if ok, _ := l.Allow(a, now.Add(200*time.Millisecond)); !ok {
		t.Error("not allowed again after the announced wait")
	}
	if got := l.Refused(); got != 1 {
		t.Errorf("Refused = %d, want 1", got)
	}
	// An IPv6 client is its /64.
	x, y := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::9")
	for range 10 {
		l.Allow(x, now)
	}
	if ok, _ := l.Allow(y, now); ok {
		t.Error("another address of the same IPv6 /64 escaped the limit")
	}
	if ok, _ := l.Allow(netip.MustParseAddr("2001:db8:1:3::1"), now); !ok {
		t.Error("another /64 was limited")
	}
}

// churn runs one holder through 65,536 addresses of its own (churner(i),
// one event each, all at one instant) against a limiter bounded to 1,024
// clients at 1/s (burst 2) that already tracks victims, their burst
// spent. The limiter must stay within its bound, no victim may get a
// fresh burst (pushed out and forgotten), and the holder gets at most its
// own buckets before pressure (half the bound) and one shared burst. It
// returns the limiter and the instant, for more checks.
func churn(t *testing.T, victims []netip.Addr, churner func(i int) netip.Addr) (*access.RateLimiter, time.Time) {
	t.Helper()
	const bound = 1024
	l := access.NewRateLimiter(1, bound)
	now := time.Unix(1e9, 0)
	for _, v := range victims {
		l.Allow(v, now)
		l.Allow(v, now)
		if ok, _ := l.Allow(v, now); ok {
			t.Fatal("third event allowed at 1/s")
		}
	}
	allowed := 0
	for i := range 65536 {
		if ok, _ := l.Allow(churner(i), now); ok {
			allowed++
		}
		if n := l.Tracked(); n > bound {
			t.Fatalf("%d clients tracked, bound %d", n, bound)
		}
	}
	for _, v := range victims {
		if ok, _ := l.Allow(v, now); ok {
			t.Fatalf("%s got a fresh burst: the churn pushed its bucket out", v)
		}
	}
	if allowed > bound/2+2 {
		t.Errorf("the churning holder had %d events allowed at once, want at most %d (own buckets before pressure, then one shared burst)", allowed, bound/2+2)
	}
	return l, now
}

// One holder of an IPv6 /48 cycling through its 65,536 /64s can neither
// push other clients out of the limiter (handing them, and itself, a fresh
// burst) nor get a burst per /64 once the limiter is half full: its new
// /64s share one bucket for the whole /48. Another /48 is not affected.
func TestRateLimiterFairUnderIPv6Churn(t *testing.T) {
	victims := make([]netip.Addr, 100)
	for i := range victims {
		victims[i] = netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
	}
	l, now := churn(t, victims, func(i int) netip.Addr {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xee, 0x01, byte(i >> 8), byte(i), 15: 1})
	})
	if ok, _ := l.Allow(netip.MustParseAddr("2001:db8:ee02:1::1"), now); !ok {
		t.Error("a client of another /48 was refused")
	}
}

// One holder of an IPv6 /32 (65,536 /48s) cycling through its /48s is
// held the same way: past its share, its new /48s share one bucket for the
// whole /32, while a site of that /32 tracked before keeps its own.
// Another /32 is not affected.
func TestRateLimiterFairUnderIPv6Slash32Churn(t *testing.T) {
	victims := make([]netip.Addr, 100)
	for i := range victims {
		victims[i] = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb9, 0, byte(i), 15: 1})
	}
	victims = append(victims, netip.MustParseAddr("2001:db8:ffff:1::1"))
	l, now := churn(t, victims, func(i int) netip.Addr {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 15: 1})
	})
	if ok, _ := l.Allow(netip.MustParseAddr("2001:db7:1::1"), now); !ok {
		t.Error("a client of another /32 was refused")
	}
}

func TestRateLimiterBounded(t *testing.T) {
	const bound = 1000
	l := access.NewRateLimiter(1, bound)
	now := time.Unix(1e9, 0)
	flood := netip.MustParseAddr("198.51.100.1")
	l.Allow(flood, now)
	l.Allow(flood, now)
	if ok, _ := l.Allow(flood, now); ok {
		t.Fatal("third event allowed at 1/s")
	}
	for i := range 10 * bound {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if ok, _ := l.Allow(ip, now); !ok {
			t.Fatalf("first event of new client %s refused", ip)
		}
		if n := l.Tracked(); n > bound {
			t.Fatalf("tracking %d clients, bound %d", n, bound)
		}
	}
	if n := l.Tracked(); n != bound {
		t.Errorf("tracking %d clients after %d, want exactly the bound %d", n, 10*bound, bound)
	}
}

func TestStreamLimiter(t *testing.T) {
	l := access.NewStreamLimiter(2)
	a := netip.MustParseAddr("192.0.2.1")
	if !l.Acquire(a) || !l.Acquire(a) {
		t.Fatal("the first two streams refused")
	}
	if l.Acquire(a) {
		t.Fatal("third stream allowed with a cap of 2")
	}
	if !l.Acquire(netip.MustParseAddr("192.0.2.2")) {
		t.Error("another client refused")
	}
	l.Release(a)
	if !l.Acquire(a) {
		t.Error("refused after one stream ended")
	}
	l.Release(a)
	l.Release(a)
	l.Release(netip.MustParseAddr("192.0.2.2"))
	if n := l.Tracked(); n != 0 {
		t.Errorf("%d clients tracked with no stream open, want 0", n)
	}
	if got := l.Refused(); got != 1 {
		t.Errorf("Refused = %d, want 1", got)
	}
}

func TestNilRulesAllowEverything(t *testing.T) {
	var r *access.RateLimiter = access.NewRateLimiter(0, 0)
	var s *access.StreamLimiter = access.NewStreamLimiter(0)
	ip := netip.MustParseAddr("192.0.2.1")
	for range 100 {
		if ok, _ := r.Allow(ip, time.Now()); !ok || !s.Acquire(ip) {
			t.Fatal("a zero limit must mean unlimited")
		}
	}
}

// The default share keeps 1 % of the listener slots for other clients,
// rounded down: none under 100 listeners, where it limits nothing.
func TestStreamShare(t *testing.T) {
	for listeners, want := range map[int]int{10000: 9900, 1000: 990, 150: 149, 100: 99} {
		l := access.NewStreamShare(listeners)
		if !l.Shared() || l.Max() != want || access.StreamShare(listeners) != want {
			t.Errorf("share of %d: %d (shared %v), want %d", listeners, l.Max(), l.Shared(), want)
		}
	}
	for _, listeners := range []int{1, 18, 99} {
		if l := access.NewStreamShare(listeners); l != nil {
			t.Errorf("share of %d listeners: %d, want no limit", listeners, l.Max())
		}
	}
	if access.NewStreamLimiter(5).Shared() {
		t.Error("MAX_LISTENERS_PER_IP's limiter says it is a share")
	}
}

// The reserve a share leaves goes to addresses holding few streams: a
// second address cannot take it whole once the first holds its share.
func TestStreamShareReserveGoesToTheFew(t *testing.T) {
	l := access.NewStreamShare(1000) // share 990; the reserve of 10 goes one each to addresses holding none
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	for range 980 {
		if !l.Acquire(a) {
			t.Fatal("refused within the share")
		}
	}
	for range 10 { // b outside the reserve: up to the share
		if !l.Acquire(b) {
			t.Fatal("b refused outside the reserve")
		}
	}
	if l.Acquire(b) {
		t.Fatal("b, holding 10, took a reserved slot")
	}
	if !l.Acquire(c) {
		t.Fatal("c, holding none, refused a reserved slot")
	}
	if l.Acquire(c) {
		t.Fatal("c took a second reserved slot")
	}
	l.Release(a)
	l.Release(a) // 989 open: the reserve is untouched again
	if !l.Acquire(b) {
		t.Fatal("b refused once a slot outside the reserve was free again")
	}
}
