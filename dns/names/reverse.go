package names

import (
	"net/netip"
	"strconv"
	"strings"
)

// Reverse-mapping domains: RFC 1035 section 3.5 (IPv4), RFC 3596 section
// 2.5 (IPv6).
const (
	reverseV4 = "in-addr.arpa"
	reverseV6 = "ip6.arpa"
)

// ReverseZones returns the reverse-mapping domains that together cover
// exactly prefix, without a trailing dot: a reverse name holds whole
// octets (IPv4) or nibbles (IPv6), so a prefix whose length is not a
// multiple of 8 (4) is split into the 2 to 128 (2 to 8) zones one step
// longer. 100.64.0.0/10 gives 64.100.in-addr.arpa to 127.100.in-addr.arpa;
// a ULA /48 gives its one 12-nibble zone. They are what a split-DNS setup
// routes to the resolver so that PTR lookups of overlay addresses reach it.
// An invalid prefix gives none.
func ReverseZones(prefix netip.Prefix) []string {
	if !prefix.IsValid() {
		return nil
	}
	prefix = prefix.Masked()
	step := 8
	if prefix.Addr().Is6() {
		step = 4
	}
	zoneBits := (prefix.Bits() + step - 1) / step * step
	n := 1 << (zoneBits - prefix.Bits())
	zones := make([]string, 0, n)
	for i := range n {
		b := prefix.Addr().AsSlice()
		if n > 1 {
			// The bits that tell the zones apart lie in one octet (IPv4)
			// or one nibble (IPv6), the last that zoneBits covers.
			b[(zoneBits-1)/8] |= byte(i) << ((8 - zoneBits%8) % 8)
		}
		a, _ := netip.AddrFromSlice(b)
		zones = append(zones, reverseName(a, zoneBits/step))
	}
	return zones
}

// reverseName returns the reverse name of the first n octets (IPv4) or
// nibbles (IPv6) of a: "64.100.in-addr.arpa" for 100.64.x.x and n = 2.
func reverseName(a netip.Addr, n int) string {
	var parts []string
	b := a.AsSlice()
	if a.Is4() {
		for i := n - 1; i >= 0; i-- {
			parts = append(parts, strconv.Itoa(int(b[i])))
		}
		return strings.Join(append(parts, reverseV4), ".")
	}
	const hexDigits = "0123456789abcdef"
	for i := n - 1; i >= 0; i-- {
		nib := b[i/2] >> 4
		if i%2 == 1 {
			nib = b[i/2] & 0xf
		}
		parts = append(parts, hexDigits[nib:nib+1])
	}
	return strings.Join(append(parts, reverseV6), ".")
}

// ParseReverse reads a reverse-mapping name ("4.3.2.100.in-addr.arpa.",
// any case, trailing dot optional). It returns the prefix its valid
// trailing labels denote (100.64.0.0/16 for "64.100.in-addr.arpa", a /32
// or /128 for a whole address), whether every label was consumed by that
// (false for "x.64.100.in-addr.arpa" or a fifth octet, names that cannot
// exist), and ok false when name is not under in-addr.arpa or ip6.arpa.
// Octets must be written canonically (0 to 255, no leading zero) and
// nibbles as one hex digit, so that each address has exactly one name.
func ParseReverse(name string) (p netip.Prefix, exact, ok bool) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	var rest string
	var v6 bool
	switch {
	case name == reverseV4, name == reverseV6:
		v6 = name == reverseV6
	case strings.HasSuffix(name, "."+reverseV4):
		rest = strings.TrimSuffix(name, "."+reverseV4)
	case strings.HasSuffix(name, "."+reverseV6):
		rest, v6 = strings.TrimSuffix(name, "."+reverseV6), true
	default:
		return netip.Prefix{}, false, false
	}
	var labels []string
	if rest != "" {
		labels = strings.Split(rest, ".")
	}
	var a [16]byte
	n := 0 // labels consumed, most significant first
	max, step := 4, 8
	if v6 {
		max, step = 32, 4
	}
	for i := len(labels) - 1; i >= 0 && n < max; i-- {
		v, good := reverseLabel(labels[i], v6)
		if !good {
			break
		}
		if v6 {
			a[n/2] |= v << (4 * (1 - n%2))
		} else {
			a[n] = v
		}
		n++
	}
	exact = n == len(labels)
	if v6 {
		return netip.PrefixFrom(netip.AddrFrom16(a), n*step), exact, true
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte(a[:4])), n*step), exact, true
}

// reverseLabel parses one label of a reverse name: a canonical decimal
// octet, or one hex nibble.
func reverseLabel(l string, v6 bool) (byte, bool) {
	if v6 {
		if len(l) != 1 {
			return 0, false
		}
		v, err := strconv.ParseUint(l, 16, 8)
		return byte(v), err == nil
	}
	if l == "" || len(l) > 3 || (len(l) > 1 && l[0] == '0') {
		return 0, false
	}
	v, err := strconv.ParseUint(l, 10, 8)
	return byte(v), err == nil
}
