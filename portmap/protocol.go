package portmap

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// Protocol names a port mapping protocol.
type Protocol string

// The protocols, in Protocols' order of preference.
const (
	UPnP   Protocol = "upnp"
	NATPMP Protocol = "nat-pmp"
	PCP    Protocol = "pcp"
)

// Protocols lists every protocol in order of preference: UPnP IGD is what
// most home routers speak; NAT-PMP and PCP are tried when it is absent
// (PCP last: where a router has both, NAT-PMP is its older, better-tested
// code).
var Protocols = []Protocol{UPnP, NATPMP, PCP}

// Mapping is a port mapping on the gateway: UDP sent to External reaches
// Internal.
type Mapping struct {
	Protocol Protocol
	Internal netip.AddrPort // this host's address on the gateway's link, and the mapped port
	External netip.AddrPort // the gateway's external address and the port it forwards
	// Lifetime is what the gateway granted; 0 is a UPnP lease without
	// expiry (some gateways grant no other), which is renewed all the same
	// and removed on Close.
	Lifetime time.Duration
	Obtained time.Time
}

// IsValid reports whether m is a mapping (the zero Mapping is none).
func (m Mapping) IsValid() bool { return m.External.IsValid() }

func (m Mapping) String() string {
	if !m.IsValid() {
		return "none"
	}
	return fmt.Sprintf("%s %s -> %s", m.Protocol, m.External, m.Internal)
}

// client is one protocol spoken to one gateway. Every call is bounded by
// its context, which the caller gives a deadline.
type client interface {
	// probe asks for the external address without mapping anything: an
	// answer means the gateway speaks the protocol.
	probe(ctx context.Context) (netip.Addr, error)
	// add maps UDP port (on the gateway's Self) for lifetime; prev is the
	// mapping being renewed, or zero, and its external port is asked for
	// again.
	add(ctx context.Context, port uint16, prev Mapping, lifetime time.Duration) (Mapping, error)
	// remove deletes m.
	remove(ctx context.Context, m Mapping) error
}

// newClient returns the client for p on gw.
func newClient(p Protocol, gw Gateway, hooks testHooks) (client, error) {
	switch p {
	case UPnP:
		return newUPnPClient(gw, hooks), nil
	case NATPMP:
		return pmpClient{gw: gw}, nil
	case PCP:
		return newPCPClient(gw)
	}
	return nil, fmt.Errorf("port mapping protocol %q: want %q, %q or %q", p, UPnP, NATPMP, PCP)
}

// testHooks redirect what tests cannot do on loopback.
type testHooks struct {
	// ssdp replaces the SSDP multicast group as the search's
	// destination: loopback carries no multicast.
	ssdp netip.AddrPort
}

// usableExternal reports whether a gateway's external address can be
// offered to peers at all. A private address (a gateway behind another
// NAT) is kept: members inside that upper network can still use it.
func usableExternal(a netip.Addr) bool {
	a = a.Unmap()
	return a.Is4() && !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() &&
		!a.IsLinkLocalUnicast() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// seconds converts a lifetime for the wire, bounded to what uint32
// carries.
func seconds(d time.Duration) uint32 {
	s := d / time.Second
	switch {
	case s < 0:
		return 0
	case s > 1<<32-1:
		return 1<<32 - 1
	}
	return uint32(s)
}
