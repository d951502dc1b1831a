package direct

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/pion/ice/v4"
)

// The socket. One UDP socket carries the direct path for both address
// families: bound to every address (the default) it is a dual-stack IPv6
// socket (IPV6_V6ONLY off), which the kernel also delivers IPv4 datagrams to,
// as IPv4-mapped addresses that the readers unmap. One socket rather than
// one per family keeps one port (for NAT mappings, port mapping and the
// candidates members announce), one reader, one demultiplexer
// (transports.Classify) and one ICE mux that pion already splits by family,
// and it needs nothing from the Bind.
//
// A host without IPv6 (no IPv6 stack in the kernel) gets an IPv4 socket from
// the same call, and Config.ListenAddr narrows the socket to one family: an
// IPv4 address (0.0.0.0 included) gives an IPv4-only socket, an IPv6 one an
// IPv6-only socket. Candidates of a family the socket cannot reach are
// neither gathered nor accepted.

// families are the address families a socket reaches.
type families struct{ v4, v6 bool }

// has reports whether the socket can send to a (unmapped).
func (f families) has(a netip.Addr) bool {
	if a.Is4() {
		return f.v4
	}
	return f.v6
}

// networkTypes are ICE's network types for the families.
func (f families) networkTypes() []ice.NetworkType {
	var nt []ice.NetworkType
	if f.v4 {
		nt = append(nt, ice.NetworkTypeUDP4)
	}
	if f.v6 {
		nt = append(nt, ice.NetworkTypeUDP6)
	}
	return nt
}

// listen opens the direct socket on addr (zero: every address, both
// families where the host has IPv6) and port, and reports the families it
// reaches.
func listen(addr netip.Addr, port int) (*net.UDPConn, families, error) {
	network, laddr := "udp", &net.UDPAddr{Port: port}
	if addr.IsValid() {
		addr = addr.Unmap()
		laddr.IP = addr.AsSlice()
		network = "udp6"
		if addr.Is4() {
			network = "udp4"
		}
	}
	c, err := net.ListenUDP(network, laddr)
	if err != nil {
		return nil, families{}, fmt.Errorf("direct: listening on UDP %s: %w", laddr, err)
	}
	// Without an address Go picks a dual-stack IPv6 socket where the host
	// supports it ("[::]:port") and an IPv4 one elsewhere ("0.0.0.0:port").
	bound := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr()
	switch {
	case bound.Is4() || bound.Is4In6():
		return c, families{v4: true}, nil
	case network == "udp" && bound.IsUnspecified():
		return c, families{v4: true, v6: true}, nil
	default:
		return c, families{v6: true}, nil
	}
}

// checkListenAddr says why addr cannot be Config.ListenAddr, or nil.
func checkListenAddr(addr netip.Addr) error {
	a := addr.Unmap()
	switch {
	case !addr.IsValid():
		return nil
	case a.IsMulticast():
		return fmt.Errorf("direct: listen address %s: a multicast address", addr)
	case a.Is6() && (a.IsLinkLocalUnicast() || a.Zone() != ""):
		return fmt.Errorf("direct: listen address %s: link-local IPv6 addresses are not supported (give a global or ULA address, or none)", addr)
	}
	return nil
}
