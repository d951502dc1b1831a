package netmon

import (
	"context"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// subscribe wakes on every netlink address and route notification until
// ctx ends, and then reports true. It reports false at once if the
// subscriptions cannot be made, or later if they die, and the caller then
// polls. Netlink's subscription goroutines block on their channels, so
// those are read until netlink closes them after done.
func subscribe(ctx context.Context, wake func()) bool {
	done := make(chan struct{})
	addrs := make(chan netlink.AddrUpdate, 16)
	routes := make(chan netlink.RouteUpdate, 16)
	lost := func(error) { wake() } // a lost notification: look anyway
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{ErrorCallback: lost}); err != nil {
		close(done)
		return false
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{ErrorCallback: lost}); err != nil {
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

// defaultRoutes lists the IPv4 and IPv6 default routes of the main table.
func defaultRoutes() []string {
	var out []string
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RouteListFiltered(family, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
		if err != nil {
			continue
		}
		for _, r := range rs {
			if r.Dst != nil && !isDefault(r.Dst) {
				continue
			}
			out = append(out, fmt.Sprintf("via %s dev %d", r.Gw, r.LinkIndex))
		}
	}
	return out
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}
