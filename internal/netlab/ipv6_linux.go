package netlab

import (
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// internet6Prefix is the lab internet's IPv6 prefix: inside the
// documentation range (RFC 3849), never routed on the real internet, like
// the IPv4 benchmarking range beside it.
var internet6Prefix = netip.MustParsePrefix("2001:db8:1::/64")

// Prefix6 is the internet's IPv6 prefix (2001:db8:1::/64), for AddIPv6.
func (i *Internet) Prefix6() netip.Prefix { return internet6Prefix }

// AddIPv6 gives a node on the internet (a host attached to it, or a
// router's WAN leg) the next free address of the internet's IPv6 prefix on
// its uplink, on-link like the IPv4 addresses there, and returns it. IPv6 is
// switched on in the node's namespace and duplicate address detection off,
// so the address is usable at once instead of after DAD's second or two.
func (h *Host) AddIPv6() netip.Addr {
	l := h.lab
	l.t.Helper()
	l.mu.Lock()
	inet := l.inet
	var addr netip.Addr
	if inet != nil && h.subnet == inet.seg.subnet {
		if !inet.next6.IsValid() {
			inet.next6 = internet6Prefix.Addr().Next()
		}
		addr = inet.next6
		inet.next6 = inet.next6.Next()
	}
	l.mu.Unlock()
	if !addr.IsValid() {
		l.t.Fatalf("netlab: %s is not on the lab internet: only its nodes get IPv6", h.name)
	}
	if !internet6Prefix.Contains(addr) {
		l.t.Fatalf("netlab: no free IPv6 address left in %s for %s", internet6Prefix, h.name)
	}
	if err := h.Do(func() error {
		// /proc/sys/net is per network namespace: this thread's.
		for _, f := range []string{"all/disable_ipv6", "default/disable_ipv6", h.uplink + "/disable_ipv6"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+f, []byte("0"), 0o644); err != nil {
				return err
			}
		}
		for _, f := range []string{"all/accept_dad", h.uplink + "/accept_dad"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+f, []byte("0"), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		l.t.Fatalf("netlab: enabling IPv6 in %s: %v", h.name, err)
	}
	link, err := h.nl.LinkByName(h.uplink)
	if err != nil {
		l.t.Fatalf("netlab: %s in %s: %v", h.uplink, h.name, err)
	}
	a := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(addr, internet6Prefix.Bits())), Flags: unix.IFA_F_NODAD}
	if err := h.nl.AddrAdd(link, a); err != nil {
		l.t.Fatalf("netlab: address %s on %s: %v", addr, h.name, err)
	}
	h.addr6 = addr
	return addr
}

// Addr6 is the address AddIPv6 gave the node; invalid before.
func (h *Host) Addr6() netip.Addr { return h.addr6 }

// DropIPv4 removes the IPv4 address of the node's uplink: with AddIPv6, an
// IPv6-only host. Addr still returns the old address.
func (h *Host) DropIPv4() {
	l := h.lab
	l.t.Helper()
	link, err := h.nl.LinkByName(h.uplink)
	if err != nil {
		l.t.Fatalf("netlab: %s in %s: %v", h.uplink, h.name, err)
	}
	addrs, err := h.nl.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		l.t.Fatalf("netlab: addresses of %s in %s: %v", h.uplink, h.name, err)
	}
	for _, a := range addrs {
		if err := h.nl.AddrDel(link, &a); err != nil {
			l.t.Fatalf("netlab: removing %s from %s: %v", a.IPNet, h.name, err)
		}
	}
	if len(addrs) == 0 {
		l.t.Fatalf("netlab: %s has no IPv4 address on %s", h.name, h.uplink)
	}
}
