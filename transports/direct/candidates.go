package direct

import (
	"net"
	"net/netip"

	"github.com/pion/transport/v5/stdnet"

	"github.com/plures/plurenet/internal/nodekey"
)

// Which of a peer's ICE candidates this node will send to. ICE answers a
// candidate with STUN binding requests, so a candidate is a request to
// send packets to an address. A member could name this host's loopback
// (127.0.0.1:53, a local database's UDP port), its link-local neighbours
// (169.254.169.254, the cloud metadata service), or this host's own LAN
// address, and make every other member probe its local ports. So:
//
//   - never: unspecified, multicast and broadcast, the reserved 0/8 and
//     240/4, IPv6 forms that name no one host (IPv4-mapped and
//     IPv4-compatible forms, the deprecated site-local fec0::/10, the
//     discard prefix 100::/64, any address with a zone), addresses of a
//     family this node's socket does not reach (socket.go), and the mesh's
//     own overlay prefixes (Config.ExcludePrefixes, the IPv6 ULA prefix
//     among them);
//   - loopback (127/8, ::1) and this host's own interface addresses: only
//     when the peer runs on this host (sameHost below), where they are how
//     two nodes on one machine reach each other;
//   - other link-local addresses (169.254/16, fe80::/10): never. An IPv6
//     link-local address means something only with a zone (which of this
//     host's links), which a peer cannot name for us; two members on one
//     link also share an IPv4 LAN, a ULA or a global prefix;
//   - everything else (LAN, public, CGNAT; IPv6 global unicast and ULA,
//     NAT64 and 6to4 forms included): allowed, as that is how direct paths
//     form.
//
// "This host" means this network namespace: loopback and interface
// addresses are per namespace, and so is the evidence sameHost uses.

// refuseRemote returns why a remote candidate address is not used, or ""
// to use it. sameHost is asked only when the answer depends on it.
func (t *Transport) refuseRemote(a netip.Addr, sameHost func() bool) string {
	if a.Is4In6() {
		return "an IPv4-mapped IPv6 address"
	}
	switch {
	case t.excluded(a):
		return "inside the mesh's own prefixes"
	case a.Is6() && a.IsLinkLocalUnicast():
		return "link-local"
	case !unicast(a) || thisNetwork.Contains(a) || reserved4.Contains(a):
		return "not a unicast address"
	case !t.fam.has(a):
		return "of an address family this node's socket does not reach"
	case a.IsLoopback() || (*t.ownAddrs.Load())[a]:
		if !sameHost() {
			return "this host's own address, and the peer does not run on this host"
		}
	case a.IsLinkLocalUnicast():
		return "link-local"
	}
	return ""
}

// unicast reports whether a (unmapped) can be one host's address on the
// direct path: not unspecified, multicast or broadcast, and for IPv6
// none of the forms that name no single host, nor link-local (see above).
func unicast(a netip.Addr) bool {
	if a.Is4() {
		return !a.IsUnspecified() && !a.IsMulticast() && a != limitedBroadcast
	}
	b := a.As16()
	v4compat := [12]byte(b[:12]) == [12]byte{}
	return a.Is6() && !a.Is4In6() && a.Zone() == "" && !a.IsMulticast() && !a.IsLinkLocalUnicast() &&
		(!v4compat || a.IsLoopback()) && !siteLocal6.Contains(a) && !discard6.Contains(a)
}

var (
	limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	thisNetwork      = netip.MustParsePrefix("0.0.0.0/8")   // RFC 1122 §3.2.1.3
	reserved4        = netip.MustParsePrefix("240.0.0.0/4") // RFC 1112 §4
	siteLocal6       = netip.MustParsePrefix("fec0::/10")   // deprecated, RFC 3879
	discard6         = netip.MustParsePrefix("100::/64")    // RFC 6666
)

// excluded reports whether a lies in an excluded prefix.
func (t *Transport) excluded(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range t.cfg.ExcludePrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// sameHost reports whether peer's node runs in this network namespace:
// whether its host marker (samehost_linux.go) exists here. A member cannot
// fake that from elsewhere; a local user could, but a local user can send
// to this host's ports directly anyway.
func (t *Transport) sameHost(peer nodekey.Public) bool {
	return t.marker != nil && t.marker.present(peer)
}

// ownAddrs returns this host's own addresses: those of the interfaces inet
// lists (read in the namespace the Transport was made in, like ICE's host
// candidates).
func ownAddrs(inet *stdnet.Net) map[netip.Addr]bool {
	own := map[netip.Addr]bool{}
	ifs, err := inet.Interfaces()
	if err != nil {
		return own
	}
	for _, ifc := range ifs {
		as, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range as {
			var ip net.IP
			switch v := a.(type) {
			case *net.IPNet:
				ip = v.IP
			case *net.IPAddr:
				ip = v.IP
			}
			if p, ok := netip.AddrFromSlice(ip); ok {
				own[p.Unmap()] = true
			}
		}
	}
	return own
}
