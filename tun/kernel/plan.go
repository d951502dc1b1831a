package kernel

import (
	"math/bits"
	"net/netip"
	"slices"
)

// Pure planning shared by the OSes that configure the device with
// separate add and delete steps (macOS, Windows): what to add, what to
// remove, which prefixes to route. Linux does the same over netlink in
// device_linux.go.

// addrChanges returns the addresses of want that have lacks (to add, in
// want's order) and those of have that want lacks (to remove, in have's
// order). An address whose prefix length changed is both removed and
// added. Adding comes first in every caller, so the mesh routes never
// lose their last address.
func addrChanges(have, want []netip.Prefix) (add, del []netip.Prefix) {
	for _, p := range want {
		if !slices.Contains(have, p) {
			add = append(add, p)
		}
	}
	for _, p := range have {
		if !slices.Contains(want, p) {
			del = append(del, p)
		}
	}
	return add, del
}

// routedPrefixes are the mesh prefixes addrs route to the device, once
// each: a host address (/32, /128) routes no prefix.
func routedPrefixes(addrs []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range addrs {
		if p.Bits() == p.Addr().BitLen() {
			continue
		}
		if m := p.Masked(); !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// maskBits is the prefix length of a netmask: its leading one bits. A
// routing socket's mask may be shorter than the address (trailing zero
// bytes left off) or not contiguous (never for IP routes in practice; the
// leading ones are taken then).
func maskBits(mask []byte) int {
	n := 0
	for _, b := range mask {
		if b == 0xff {
			n += 8
			continue
		}
		n += bits.LeadingZeros8(^b)
		break
	}
	return n
}
