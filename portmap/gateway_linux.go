package portmap

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// defaultGateway reads the main table's IPv4 default routes over netlink
// and returns the gateway of the preferred one (lowest metric).
func defaultGateway() (netip.Addr, error) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("listing routes: %w", err)
	}
	var best netip.Addr
	bestMetric := -1
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		gw, ok := netip.AddrFromSlice(r.Gw)
		if !ok || !gw.Unmap().Is4() {
			continue
		}
		if bestMetric < 0 || r.Priority < bestMetric {
			best, bestMetric = gw.Unmap(), r.Priority
		}
	}
	if !best.IsValid() {
		return netip.Addr{}, errNoGateway
	}
	return best, nil
}
