package netlab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Network is a segment hosts can be attached to: the *Internet or the LAN of
// a *Router.
type Network interface {
	segment() *segment
}

// segment is an L2 broadcast domain: a bridge in some namespace, a subnet,
// an optional gateway and an address allocator.
type segment struct {
	owner   *Host        // namespace holding the bridge
	bridge  netlink.Link // the bridge
	subnet  netip.Prefix
	gateway netip.Addr // invalid on the internet: every node there is on-link
	next    netip.Addr // next free address
	ports   int        // bridge ports made so far, for unique port names
}

// Internet is the lab's public network: a bridge in its own namespace on
// 198.18.0.0/15. Hosts and router WAN legs attached to it reach each other
// directly, like hosts with public addresses.
type Internet struct {
	seg   segment
	next6 netip.Addr // next free IPv6 address (ipv6_linux.go); guarded by the lab's mu
}

func (i *Internet) segment() *segment { return &i.seg }

// Prefix is the internet's subnet (198.18.0.0/15).
func (i *Internet) Prefix() netip.Prefix { return i.seg.subnet }

// RouterConfig chooses how a NAT router behaves. The zero value is a typical
// home router: port-preserving NAT, LAN 10.k.0.0/24 (k = 1 for the lab's
// first router, 2 for the second...).
type RouterConfig struct {
	// Random makes the NAT choose random external ports (MASQUERADE
	// --random-fully), like carrier-grade and some enterprise NATs, instead
	// of keeping the source port where it is free.
	Random bool
	// LAN is the subnet behind the router; the router takes its first
	// address. Two routers may share a subnet, as two homes often do.
	LAN netip.Prefix
}

// Router is a NAT router: a namespace with a WAN leg ("wan") on the internet
// and a LAN bridge ("lan") for the hosts behind it. Its embedded Host is the
// router's own namespace; Addr is its WAN (public) address.
type Router struct {
	*Host
	lan segment
}

func (r *Router) segment() *segment { return &r.lan }

// LANAddr is the router's address on its LAN (the hosts' default gateway).
func (r *Router) LANAddr() netip.Addr { return r.lan.gateway }

// LANPrefix is the subnet behind the router.
func (r *Router) LANPrefix() netip.Prefix { return r.lan.subnet }

// Internet returns the lab's internet, creating it on first use.
func (l *Lab) Internet() *Internet {
	l.t.Helper()
	l.mu.Lock()
	inet := l.inet
	l.mu.Unlock()
	if inet != nil {
		return inet
	}
	owner := l.newNode("inet")
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := owner.nl.LinkAdd(br); err != nil {
		l.t.Fatalf("netlab: creating internet bridge: %v", err)
	}
	if err := owner.nl.LinkSetUp(br); err != nil {
		l.t.Fatalf("netlab: bringing up internet bridge: %v", err)
	}
	inet = &Internet{seg: segment{
		owner:  owner,
		bridge: br,
		subnet: internetPrefix,
		next:   internetPrefix.Addr().Next(),
	}}
	l.mu.Lock()
	l.inet = inet
	l.mu.Unlock()
	return inet
}

// NATRouter creates a router attached to the internet that masquerades its
// LAN behind its WAN address and, like a home router, drops unsolicited
// packets arriving on its WAN.
func (l *Lab) NATRouter(name string, cfg RouterConfig) *Router {
	l.t.Helper()
	inet := l.Internet()
	l.mu.Lock()
	l.routers++
	k := l.routers
	l.mu.Unlock()
	if !cfg.LAN.IsValid() {
		if k > 254 {
			l.t.Fatalf("netlab: too many routers for the default LAN numbering; set RouterConfig.LAN")
		}
		cfg.LAN = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(k), 0, 0}), 24)
	}
	cfg.LAN = cfg.LAN.Masked()
	if !cfg.LAN.Addr().Is4() || cfg.LAN.Bits() > 30 {
		l.t.Fatalf("netlab: router LAN %s: want an IPv4 prefix of /30 or shorter", cfg.LAN)
	}

	h := l.newNode(name)
	h.uplink = "wan"
	h.router = true
	l.attach(&inet.seg, h, "wan")

	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "lan"}}
	gw := cfg.LAN.Addr().Next()
	if err := h.nl.LinkAdd(br); err != nil {
		l.t.Fatalf("netlab: router %s: creating LAN bridge: %v", name, err)
	}
	if err := h.nl.AddrAdd(br, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(gw, cfg.LAN.Bits()))}); err != nil {
		l.t.Fatalf("netlab: router %s: LAN address: %v", name, err)
	}
	if err := h.nl.LinkSetUp(br); err != nil {
		l.t.Fatalf("netlab: router %s: LAN up: %v", name, err)
	}
	if err := h.Do(func() error {
		// /proc/sys/net is per network namespace: this thread's.
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	}); err != nil {
		l.t.Fatalf("netlab: router %s: enabling forwarding: %v", name, err)
	}

	masq := []string{"-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"}
	if cfg.Random {
		masq = append(masq, "--random-fully")
	}
	rules := [][]string{
		masq,
		// A home router answers nothing it did not ask for. Besides being
		// realistic this is required for hole punching between two
		// MASQUERADE routers: accepting the peer's first punch packet as
		// a NEW connection to the router leaves a conntrack entry that
		// pushes our own outgoing mapping off its port (DESIGN.md).
		{"-A", "INPUT", "-i", "wan", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"},
		// Nor does it forward unsolicited packets from outside to the LAN.
		{"-A", "FORWARD", "-i", "wan", "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP"},
	}
	for _, rule := range rules {
		if err := h.iptables(context.Background(), rule...); err != nil {
			l.t.Fatalf("netlab: router %s: %v", name, err)
		}
	}
	h.hookFirewall()

	return &Router{Host: h, lan: segment{
		owner:   h,
		bridge:  br,
		subnet:  cfg.LAN,
		gateway: gw,
		next:    gw.Next(),
	}}
}

// Host creates a host attached to on (the *Internet or a *Router), with
// interface "eth0", the next free address of that network and, behind a
// router, a default route through it. A nil network gives an isolated
// namespace with only loopback.
func (l *Lab) Host(name string, on Network) *Host {
	l.t.Helper()
	h := l.newNode(name)
	if on != nil {
		h.uplink = "eth0"
		l.attach(on.segment(), h, "eth0")
	}
	h.hookFirewall()
	return h
}

// attach joins h to seg with a veth pair: ifname inside h, a port enslaved
// to seg's bridge on the other side. The pair is created in seg's namespace
// with its peer placed straight into h's, so it never exists in the root
// namespace.
func (l *Lab) attach(seg *segment, h *Host, ifname string) {
	l.t.Helper()
	l.mu.Lock()
	addr := seg.next
	seg.next = seg.next.Next()
	seg.ports++
	port := fmt.Sprintf("p%d-%s", seg.ports, h.name)
	l.mu.Unlock()
	if len(port) > maxIfName {
		port = port[:maxIfName]
	}
	if !seg.subnet.Contains(addr) || addr == broadcast(seg.subnet) {
		l.t.Fatalf("netlab: no free address left in %s for %s", seg.subnet, h.name)
	}

	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: port, MasterIndex: seg.bridge.Attrs().Index},
		PeerName:      ifname,
		PeerNamespace: netlink.NsFd(h.ns),
	}
	if err := seg.owner.nl.LinkAdd(veth); err != nil {
		l.t.Fatalf("netlab: veth %s/%s for %s: %v", port, ifname, h.name, err)
	}
	if err := seg.owner.nl.LinkSetUp(veth); err != nil {
		l.t.Fatalf("netlab: port %s up: %v", port, err)
	}
	link, err := h.nl.LinkByName(ifname)
	if err != nil {
		l.t.Fatalf("netlab: %s in %s: %v", ifname, h.name, err)
	}
	if err := h.nl.AddrAdd(link, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(addr, seg.subnet.Bits()))}); err != nil {
		l.t.Fatalf("netlab: address %s on %s: %v", addr, h.name, err)
	}
	if err := h.nl.LinkSetUp(link); err != nil {
		l.t.Fatalf("netlab: %s up in %s: %v", ifname, h.name, err)
	}
	if seg.gateway.IsValid() {
		route := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Dst:       &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)},
			Gw:        seg.gateway.AsSlice(),
		}
		if err := h.nl.RouteAdd(route); err != nil {
			l.t.Fatalf("netlab: default route of %s via %s: %v", h.name, seg.gateway, err)
		}
	}
	h.addr = addr
	h.subnet = seg.subnet
}

// maxIfName is IFNAMSIZ minus the terminating NUL.
const maxIfName = 15

// broadcast is the last address of an IPv4 prefix.
func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Host is a network namespace in the lab: an end host, or the namespace of
// a Router. Run, Start and Do execute code inside it.
type Host struct {
	lab     *Lab
	name    string
	nsName  string
	ns      netns.NsHandle
	nl      *netlink.Handle
	created bool // namespace exists and must be deleted

	uplink string // "eth0", "wan", or "" when isolated
	router bool
	addr   netip.Addr
	addr6  netip.Addr // from AddIPv6
	subnet netip.Prefix
}

// Name is the node name given to the lab.
func (h *Host) Name() string { return h.name }

// Namespace is the name of the host's network namespace, for `ip netns exec`.
func (h *Host) Namespace() string { return h.nsName }

// NetNS is a handle on the host's namespace, valid until the lab's cleanup.
// Use it with netlink.NewHandleAt or netns.Set; do not close it.
func (h *Host) NetNS() netns.NsHandle { return h.ns }

// Addr is the host's address on its network: its LAN address behind a
// router, its public address on the internet, a router's WAN address. It is
// invalid for an isolated host.
func (h *Host) Addr() netip.Addr { return h.addr }

// Prefix is the subnet of the host's network.
func (h *Host) Prefix() netip.Prefix { return h.subnet }

// Uplink is the interface leading out of the host ("eth0"; "wan" on a
// router; "" when isolated).
func (h *Host) Uplink() string { return h.uplink }

func (h *Host) String() string { return h.nsName }
