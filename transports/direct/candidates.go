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
//     240/4, and the mesh's own overlay prefixes (Config.ExcludePrefixes);
//   - loopback and this host's own interface addresses: only when the peer
//     runs on this host (sameHost below), where they are how two nodes on
//     one machine reach each other;
//   - other link-local addresses: never;
//   - everything else (LAN, public, CGNAT): allowed, as that is how direct
//     paths form.
//
// "This host" means this network namespace: loopback and interface
// addresses are per namespace, and so is the evidence sameHost uses.

// refuseRemote returns why a remote candidate address is not used, or ""
// to use it. sameHost is asked only when the answer depends on it.
func (t *Transport) refuseRemote(a netip.Addr, sameHost func() bool) string {
	a = a.Unmap()
	switch {
	case t.excluded(a):
		return "inside the mesh's own prefixes"
	case !a.Is4() || a.IsUnspecified() || a.IsMulticast() || a == limitedBroadcast ||
		thisNetwork.Contains(a) || reserved4.Contains(a):
		return "not a unicast IPv4 address"
	case a.IsLoopback() || (*t.ownAddrs.Load())[a]:
		if !sameHost() {
			return "this host's own address, and the peer does not run on this host"
		}
	case a.IsLinkLocalUnicast():
		return "link-local"
	}
	return ""
}

var (
	limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	thisNetwork      = netip.MustParsePrefix("0.0.0.0/8")   // RFC 1122 §3.2.1.3
	reserved4        = netip.MustParsePrefix("240.0.0.0/4") // RFC 1112 §4
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
