package access

import "net/netip"

// Anonymize truncates a client address before it is passed on: an IPv4
// address to its /24 (last octet 0), an IPv6 address to its /48. An
// IPv4-mapped IPv6 address (::ffff:a.b.c.d) counts as the IPv4 address it
// carries. An invalid address is returned as is.
func Anonymize(ip netip.Addr) netip.Addr {
	return mask(ip, 24, 48)
}

// mask keeps the first v4 bits of an IPv4 address, the first v6 of an IPv6
// one, without zone.
func mask(ip netip.Addr, v4, v6 int) netip.Addr {
	ip = ip.Unmap().WithZone("")
	bits := v6
	if ip.Is4() {
		bits = v4
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return ip
	}
	return p.Addr()
}
