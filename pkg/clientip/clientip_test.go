package clientip

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

func prefixes(tb testing.TB, cidrs ...string) []netip.Prefix {
	tb.Helper()
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		out = append(out, netip.MustParsePrefix(c))
	}
	return out
}

func TestClientIP(t *testing.T) {
	// 10.0.0.0/8 and fd00::/8 are our proxies in every case that trusts any.
	proxies := []string{"10.0.0.0/8", "fd00::/8"}
	cases := []struct {
		name    string
		trusted []string
		peer    string
		xff     []string // one element per X-Forwarded-For header
		want    string
	}{
		{name: "peer only", peer: "192.0.2.1:5555", want: "192.0.2.1"},
		{name: "peer only, proxies configured", trusted: proxies, peer: "192.0.2.1:5555", want: "192.0.2.1"},
		{name: "IPv6 peer with brackets", peer: "[2001:db8::1]:443", want: "2001:db8::1"},
		{name: "IPv6 peer with zone", peer: "[fe80::1%eth0]:443", want: "fe80::1"},
		{name: "IPv6 loopback peer", peer: "[::1]:80", want: "::1"},
		{name: "IPv4-mapped IPv6 peer", peer: "[::ffff:192.0.2.9]:80", want: "192.0.2.9"},
		{name: "IPv4-mapped IPv6 trusted peer", trusted: proxies, peer: "[::ffff:10.1.1.1]:80", xff: []string{"198.51.100.4"}, want: "198.51.100.4"},
		{name: "peer without port", peer: "192.0.2.1", want: "192.0.2.1"},
		{name: "unparsable peer returned as is", peer: "@unix", want: "@unix"},
		{name: "no proxy trusted: XFF ignored", peer: "192.0.2.1:1", xff: []string{"198.51.100.4"}, want: "192.0.2.1"},
		{name: "untrusted peer: XFF ignored", trusted: proxies, peer: "192.0.2.1:1", xff: []string{"198.51.100.4, 10.0.0.2"}, want: "192.0.2.1"},
		{name: "trusted peer: single entry", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"198.51.100.4"}, want: "198.51.100.4"},
		{name: "trusted peer: right-most untrusted chosen", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"203.0.113.66, 198.51.100.4"}, want: "198.51.100.4"},
		{name: "spoofed left entries never reached", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"10.9.9.9, 1.1.1.1, 198.51.100.4, 10.0.0.3"}, want: "198.51.100.4"},
		{name: "chain of trusted hops skipped", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"198.51.100.4, 10.0.0.3, 10.0.0.2"}, want: "198.51.100.4"},
		{name: "IPv6 chain", trusted: proxies, peer: "[fd00::1]:1", xff: []string{"2001:db8::5, fd00::2"}, want: "2001:db8::5"},
		{name: "all trusted: left-most", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"10.0.0.4, 10.0.0.3, 10.0.0.2"}, want: "10.0.0.4"},
		{name: "multiple headers concatenated in order", trusted: proxies, peer: "10.0.0.1:1",
			xff: []string{"203.0.113.66, 198.51.100.4", "10.0.0.3", "10.0.0.2"}, want: "198.51.100.4"},
		{name: "multiple headers: last header's untrusted entry wins", trusted: proxies, peer: "10.0.0.1:1",
			xff: []string{"10.0.0.9", "198.51.100.4, 10.0.0.2"}, want: "198.51.100.4"},
		{name: "multiple headers all trusted: left-most of first", trusted: proxies, peer: "10.0.0.1:1",
			xff: []string{"10.0.0.5, 10.0.0.4", "10.0.0.3"}, want: "10.0.0.5"},
		{name: "invalid entry stops walk at peer", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"198.51.100.4, unknown"}, want: "10.0.0.1"},
		{name: "invalid entry returns nearest trusted hop", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"198.51.100.4, garbage, 10.0.0.2"}, want: "10.0.0.2"},
		{name: "invalid entry in a later header", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"198.51.100.4", "_hidden, 10.0.0.3"}, want: "10.0.0.3"},
		{name: "empty entry stops walk", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"198.51.100.4,,10.0.0.2"}, want: "10.0.0.2"},
		{name: "entries with ports", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"198.51.100.4:3333, 10.0.0.2:80"}, want: "198.51.100.4"},
		{name: "bracketed IPv6 entries", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"[2001:db8::9]:443, [fd00::3]"}, want: "2001:db8::9"},
		{name: "spaces and tabs", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"  203.0.113.66 ,\t198.51.100.4\t,  10.0.0.2  "}, want: "198.51.100.4"},
		{name: "no spaces", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"203.0.113.66,198.51.100.4,10.0.0.2"}, want: "198.51.100.4"},
		{name: "empty header", trusted: proxies, peer: "10.0.0.1:1", xff: []string{""}, want: "10.0.0.1"},
		{name: "no header", trusted: proxies, peer: "10.0.0.1:1", want: "10.0.0.1"},
		{name: "mapped entry unmapped", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"::ffff:198.51.100.4"}, want: "198.51.100.4"},
		{name: "mapped trusted entry skipped", trusted: proxies, peer: "10.0.0.1:1", xff: []string{"198.51.100.4, ::ffff:10.0.0.2"}, want: "198.51.100.4"},
		{name: "single host prefix", trusted: []string{"192.0.2.10/32"}, peer: "192.0.2.10:1", xff: []string{"198.51.100.4, 192.0.2.11"}, want: "192.0.2.11"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/api/events", nil)
			req.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				req.Header.Add("X-Forwarded-For", v)
			}
			r := New(prefixes(t, tc.trusted...))
			if got := r.ClientIP(req); got != tc.want {
				t.Errorf("ClientIP = %q, want %q", got, tc.want)
			}
			if r.Enabled() != (len(tc.trusted) > 0) {
				t.Errorf("Enabled = %v with %d trusted prefixes", r.Enabled(), len(tc.trusted))
			}
		})
	}
}

// The zero value is usable and trusts nobody.
func TestZeroResolver(t *testing.T) {
	var r Resolver
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	req.RemoteAddr = "10.0.0.1:9"
	req.Header.Set("X-Forwarded-For", "198.51.100.4")
	if got := r.ClientIP(req); got != "10.0.0.1" {
		t.Errorf("ClientIP = %q, want the peer", got)
	}
	if r.Enabled() {
		t.Error("zero Resolver reports proxies trusted")
	}
}

// A real request through a real server: RemoteAddr as net/http sets it.
func TestClientIPOverHTTP(t *testing.T) {
	r := New(prefixes(t, "127.0.0.0/8", "::1/128"))
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		got <- r.ClientIP(req)
	}))
	defer srv.Close()
	req, err := http.NewRequest(http.MethodPost, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-For", "203.0.113.66, 198.51.100.4, 127.0.0.2")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ip := <-got; ip != "198.51.100.4" {
		t.Errorf("ClientIP = %q, want 198.51.100.4", ip)
	}
}
