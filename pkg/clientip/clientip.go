// Package clientip works out which address sent a request, believing
// X-Forwarded-For only when it comes from a trusted proxy.
package clientip

import (
	"net/http"
	"net/netip"
	"strings"
)

// Resolver finds the client address of a request. The zero value trusts no
// proxy and always answers with the TCP peer address.
type Resolver struct {
	trusted []netip.Prefix
}

// New returns a Resolver that believes X-Forwarded-For from peers inside
// trusted.
func New(trusted []netip.Prefix) *Resolver { return &Resolver{trusted: trusted} }

// Enabled reports whether any proxy is trusted.
func (r *Resolver) Enabled() bool { return len(r.trusted) > 0 }

func (r *Resolver) isTrusted(a netip.Addr) bool {
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP returns the client address of req, without port or zone, as
// [Resolver.Addr] finds it; the raw peer address when that is not an IP.
func (r *Resolver) ClientIP(req *http.Request) string {
	if a := r.Addr(req); a.IsValid() {
		return a.String()
	}
	return req.RemoteAddr
}

// Addr returns the client address of req, without zone, IPv4-mapped IPv6
// addresses unmapped; the zero Addr when the peer address is not an IP.
//
// When the TCP peer is a trusted proxy, X-Forwarded-For (all its headers, in
// order) is walked from the right: each trusted hop is skipped and the first
// address not in a trusted range is the client. If every listed hop is
// trusted, the left-most is the client. An entry that is not an IP address
// ends the walk: it cannot be believed, so the last address known good (the
// nearest trusted hop) is returned. Spoofed entries a client prepends sit to
// the left of what our proxies appended and are never reached.
func (r *Resolver) Addr(req *http.Request) netip.Addr {
	peer, ok := parse(req.RemoteAddr)
	if !ok {
		return netip.Addr{}
	}
	if !r.isTrusted(peer) {
		return peer
	}
	client := peer
	hops := req.Header.Values("X-Forwarded-For")
	for h := len(hops) - 1; h >= 0; h-- {
		list := hops[h]
		for list != "" {
			var entry string
			if i := strings.LastIndexByte(list, ','); i >= 0 {
				entry, list = list[i+1:], list[:i]
			} else {
				entry, list = list, ""
			}
			a, ok := parse(strings.TrimSpace(entry))
			if !ok {
				return client
			}
			client = a
			if !r.isTrusted(a) {
				return a
			}
		}
	}
	return client
}

// parse accepts "ip", "ip:port" and "[ipv6]:port".
func parse(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}
