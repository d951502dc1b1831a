package portmap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Gateway is the router port mapping talks to, and this host's address on
// the link they share (what the gateway must forward to).
type Gateway struct {
	Addr netip.Addr
	Self netip.Addr
}

// errNoGateway: no IPv4 default route with a gateway (a host on the
// internet itself, or offline).
var errNoGateway = errors.New("no IPv4 default route through a gateway")

// FindGateway returns the IPv4 default route's gateway (netlink on Linux,
// the operating system's route table elsewhere) and this host's source
// address toward it.
func FindGateway() (Gateway, error) {
	gw, err := defaultGateway()
	if err != nil {
		return Gateway{}, err
	}
	return gatewayFrom(gw)
}

// gatewayFrom completes a Gateway from its address: the kernel picks our
// source address for it, as it would for the requests we send it.
func gatewayFrom(gw netip.Addr) (Gateway, error) {
	gw = gw.Unmap()
	if !gw.Is4() || gw.IsUnspecified() || gw.IsMulticast() {
		return Gateway{}, fmt.Errorf("gateway %s: want a unicast IPv4 address", gw)
	}
	// Connecting a UDP socket sends nothing; it only asks the routing
	// table which source address the gateway would see.
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(gw, pcpPort)))
	if err != nil {
		return Gateway{}, fmt.Errorf("gateway %s: no route: %w", gw, err)
	}
	defer c.Close()
	self := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	return Gateway{Addr: gw, Self: self}, nil
}
