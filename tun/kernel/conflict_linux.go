package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// dumpRetries bounds how often a netlink dump is retried when the kernel
// reports that the tables changed while it was being read; a busy router
// daemon could otherwise keep us looping.
const dumpRetries = 3

// checkConflicts returns a *ConflictError for the first address or route
// in the namespace (any interface, any routing table) that overlaps one of
// prefixes. Default routes overlap everything and are not conflicts: the
// mesh routes are more specific and take precedence.
func checkConflicts(nl *netlink.Handle, prefixes []netip.Prefix) error {
	links, err := retryDump(nl.LinkList)
	if err != nil {
		return fmt.Errorf("listing interfaces: %w", err)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}

	addrs, err := retryDump(func() ([]netlink.Addr, error) { return nl.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("listing addresses: %w", err)
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		// Every table: policy-routing VPNs (Tailscale, wg-quick) keep
		// their routes outside the main table.
		return nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("listing routes: %w", err)
	}
	existing := make([]existingNet, 0, len(addrs)+len(routes))
	for _, a := range addrs {
		if p, ok := toPrefix(a.IPNet); ok {
			existing = append(existing, existingNet{Prefix: p, Kind: "address", Interface: names[a.LinkIndex]})
		}
	}
	for _, r := range routes {
		if dst, ok := toPrefix(r.Dst); ok {
			existing = append(existing, existingNet{Prefix: dst, Kind: "route", Interface: names[routeLink(r)], RouteType: routeType(r.Type)})
		}
	}
	return firstConflict(prefixes, existing)
}

// routeLink is the interface a route leaves through (its first hop's for
// multipath routes), 0 for none.
func routeLink(r netlink.Route) int {
	if r.LinkIndex != 0 {
		return r.LinkIndex
	}
	for _, hop := range r.MultiPath {
		if hop.LinkIndex != 0 {
			return hop.LinkIndex
		}
	}
	return 0
}

func routeType(t int) string {
	switch t {
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_THROW:
		return "throw"
	case unix.RTN_LOCAL:
		return "local"
	}
	return fmt.Sprintf("type %d", t)
}

func toPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	if a.BitLen() != bits {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}

// retryDump calls list until its dump was not interrupted by a concurrent
// change, at most dumpRetries times.
func retryDump[T any](list func() ([]T, error)) ([]T, error) {
	var (
		out []T
		err error
	)
	for range dumpRetries {
		out, err = list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return nil, err
}
