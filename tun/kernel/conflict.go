package kernel

import "net/netip"

// existingNet is an address or route the host already has, as each OS's
// conflict check lists them (netlink on Linux, the routing socket on macOS,
// the IP Helper tables on Windows).
type existingNet struct {
	// Prefix is the address with its prefix length, or the route's
	// destination.
	Prefix netip.Prefix
	// Kind is "address" or "route".
	Kind string
	// Interface names the interface holding it; empty for routes without
	// one.
	Interface string
	// RouteType describes a route without an interface ("blackhole"...).
	RouteType string
}

// firstConflict returns a *ConflictError for the first of existing that
// overlaps one of prefixes, nil when none does. Default routes (prefix
// length 0) overlap everything and are not conflicts: the mesh routes are
// more specific and take precedence.
func firstConflict(prefixes []netip.Prefix, existing []existingNet) error {
	for _, e := range existing {
		if !e.Prefix.IsValid() || (e.Kind == "route" && e.Prefix.Bits() == 0) {
			continue
		}
		for _, p := range prefixes {
			if !p.Overlaps(e.Prefix) {
				continue
			}
			c := &ConflictError{Prefix: p, Existing: e.Prefix, Kind: e.Kind, Interface: e.Interface}
			if e.Kind == "route" {
				c.Existing = e.Prefix.Masked()
				if e.Interface == "" {
					c.RouteType = e.RouteType
				}
			}
			return c
		}
	}
	return nil
}
