package netmon

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Snapshot is what the direct path depends on: the usable addresses of the
// interfaces that are up, and the default routes (where the platform
// tells them). Two snapshots are equal when nothing that matters changed.
type Snapshot struct {
	Addrs  []netip.Addr // sorted; no loopback, link-local or excluded addresses
	Routes []string     // sorted default routes, "via GW dev IFINDEX"; empty where unknown
}

// Equal reports whether s and o describe the same network.
func (s Snapshot) Equal(o Snapshot) bool {
	return slices.Equal(s.Addrs, o.Addrs) && slices.Equal(s.Routes, o.Routes)
}

func (s Snapshot) String() string {
	as := make([]string, len(s.Addrs))
	for i, a := range s.Addrs {
		as[i] = a.String()
	}
	return fmt.Sprintf("addrs [%s] default [%s]", strings.Join(as, " "), strings.Join(s.Routes, "; "))
}

// Take reads the current snapshot in the calling thread's namespace.
func Take(exclude []netip.Prefix) (Snapshot, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return Snapshot{}, fmt.Errorf("netmon: listing interfaces: %w", err)
	}
	var s Snapshot
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		as, err := ifc.Addrs()
		if err != nil {
			continue // the interface went away meanwhile
		}
		for _, a := range as {
			pfx, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(pfx.IP)
			if ok && usable(ip.Unmap(), exclude) {
				s.Addrs = append(s.Addrs, ip.Unmap())
			}
		}
	}
	slices.SortFunc(s.Addrs, netip.Addr.Compare)
	s.Addrs = slices.Compact(s.Addrs)
	s.Routes = defaultRoutes()
	slices.Sort(s.Routes)
	return s, nil
}

// usable reports whether a can carry a direct path.
func usable(a netip.Addr, exclude []netip.Prefix) bool {
	if !a.IsValid() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() || a.IsMulticast() {
		return false
	}
	for _, p := range exclude {
		if p.Contains(a) {
			return false
		}
	}
	return true
}
