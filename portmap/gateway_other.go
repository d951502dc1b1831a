//go:build !linux

package portmap

import (
	"fmt"
	"net/netip"

	"github.com/jackpal/gateway"
)

// defaultGateway asks the operating system's route table (route, netstat
// or their Windows equivalent, through github.com/jackpal/gateway).
func defaultGateway() (netip.Addr, error) {
	ip, err := gateway.DiscoverGateway()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: %v", errNoGateway, err)
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok || !a.Unmap().Is4() {
		return netip.Addr{}, errNoGateway
	}
	return a.Unmap(), nil
}
