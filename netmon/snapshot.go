package netmon

import (
	"fmt"
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

// newSnapshot builds a Snapshot from what the platform listed: it keeps
// the usable addresses, sorts and dedupes.
func newSnapshot(addrs []netip.Addr, routes []string, exclude []netip.Prefix) Snapshot {
	var s Snapshot
	for _, a := range addrs {
		if a = a.Unmap(); usable(a, exclude) {
			s.Addrs = append(s.Addrs, a)
		}
	}
	slices.SortFunc(s.Addrs, netip.Addr.Compare)
	s.Addrs = slices.Compact(s.Addrs)
	s.Routes = slices.Clone(routes)
	slices.Sort(s.Routes)
	return s
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
