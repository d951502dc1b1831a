package netmon

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// source is the network namespace the Monitor was started in, held open:
// snapshots and notifications come from it whichever thread the Monitor's
// goroutines run on.
type source struct {
	ns netns.NsHandle
	h  *netlink.Handle
}

func newSource() (*source, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("netmon: this thread's network namespace: %w", err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netmon: netlink: %w", err)
	}
	return &source{ns: ns, h: h}, nil
}

func (s *source) close() {
	s.h.Close()
	s.ns.Close()
}

// take lists the addresses of the links that are up (loopback aside) and
// the main table's default routes.
func (s *source) take(exclude []netip.Prefix) (Snapshot, error) {
	links, err := s.h.LinkList()
	if err != nil {
		return Snapshot{}, fmt.Errorf("netmon: listing interfaces: %w", err)
	}
	up := map[int]bool{}
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagUp != 0 && a.Flags&net.FlagLoopback == 0 {
			up[a.Index] = true
		}
	}
	as, err := s.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return Snapshot{}, fmt.Errorf("netmon: listing addresses: %w", err)
	}
	var addrs []netip.Addr
	for _, a := range as {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && up[a.LinkIndex] {
			addrs = append(addrs, ip)
		}
	}
	var routes []string
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := s.h.RouteListFiltered(family, &netlink.Route{Table: mainTable}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return Snapshot{}, fmt.Errorf("netmon: listing routes: %w", err)
		}
		for _, r := range rs {
			if r.Dst == nil || isDefault(r.Dst) {
				routes = append(routes, fmt.Sprintf("via %s dev %d", r.Gw, r.LinkIndex))
			}
		}
	}
	return newSnapshot(addrs, routes, exclude), nil
}

// mainTable is RT_TABLE_MAIN, where default routes live.
const mainTable = 254

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

// subscribe wakes on every netlink address and route notification of the
// namespace until ctx ends, and then reports true. It reports false at
// once if the subscriptions cannot be made, or later if they die, and the
// caller then polls. Netlink's subscription goroutines block on their
// channels, so those are read until netlink closes them after done.
func (s *source) subscribe(ctx context.Context, wake func()) bool {
	done := make(chan struct{})
	addrs := make(chan netlink.AddrUpdate, 16)
	routes := make(chan netlink.RouteUpdate, 16)
	lost := func(error) { wake() } // a lost notification: look anyway
	ns := s.ns
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: &ns, ErrorCallback: lost}); err != nil {
		close(done)
		return false
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &ns, ErrorCallback: lost}); err != nil {
		close(done)
		for range addrs {
		}
		return false
	}
	ctxDone := ctx.Done()
	for addrs != nil || routes != nil {
		select {
		case <-ctxDone:
			close(done) // netlink closes both channels in turn
			ctxDone = nil
			continue
		case _, ok := <-addrs:
			if !ok {
				addrs = nil
				continue
			}
		case _, ok := <-routes:
			if !ok {
				routes = nil
				continue
			}
		}
		wake()
	}
	if ctxDone != nil { // the subscriptions died on their own: poll instead
		close(done)
		return false
	}
	return true
}
