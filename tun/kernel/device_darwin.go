package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"golang.org/x/net/route"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// On macOS the device is a utun interface made by wireguard-go's tun
// package and configured with ifconfig(8) and route(8) (utun.go says why
// and builds their command lines). Not run on a real Mac in this project's
// tests: compiled and vetted only (README, "Other operating systems").

// privilegeHint tells the user the two ways forward.
const privilegeHint = "run as root (sudo), or drop --tun to use the userspace adapter (no privileges needed)"

// Device is a configured utun interface.
type Device struct {
	handle // name: the kernel's, utunN even when "utun" was asked for

	mu    sync.Mutex
	addrs []netip.Prefix // what the device holds, for SetAddrs
}

// Create creates the utun interface described by cfg and configures it.
// cfg.Name must be "utun" (the kernel picks the unit; Name tells which)
// or "utunN"; empty means "utun". Like on Linux it first refuses to shadow
// another interface's address or route in a mesh prefix.
func Create(cfg Config) (*Device, error) {
	if cfg.Name == "" {
		cfg.Name = "utun"
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := checkUtunName(cfg.Name); err != nil {
		return nil, err
	}
	if err := checkConflicts(cfg.meshPrefixes()); err != nil {
		return nil, fmt.Errorf("creating TUN device %s: %w", cfg.Name, err)
	}
	t, err := tun.CreateTUN(cfg.Name, cfg.MTU)
	if err != nil {
		switch {
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			return nil, permissionError(cfg.Name)
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("creating TUN device %s: %w: %w (give --tun utun to take a free one)", cfg.Name, ErrInUse, err)
		}
		return nil, fmt.Errorf("creating TUN device %s: %w", cfg.Name, err)
	}
	name, err := t.Name()
	if err != nil {
		_ = t.Close()
		return nil, fmt.Errorf("creating TUN device %s: reading its name: %w", cfg.Name, err)
	}
	d := &Device{handle: handle{name: name, log: cfg.Logger, filter: newDestFilter(cfg.Addrs)}}
	d.tun = &filteredTUN{Device: t, filter: d.filter, log: d.log, name: name}
	if err := runTools(d.name, utunAddCommands(name, cfg.Addrs)); err != nil {
		_ = d.Close()
		return nil, fmt.Errorf("configuring TUN device %s: %w", name, err)
	}
	if err := waitUsable(cfg.Addrs, usableWait); err != nil {
		d.log.Warn("kernel TUN device addresses not usable yet", "iface", name, "err", err)
	}
	d.addrs = slices.Clone(cfg.Addrs)
	d.log.Info("kernel TUN device up", "iface", name, "mtu", cfg.MTU, "addrs", cfg.Addrs)
	return d, nil
}

// SetAddrs replaces the device's addresses with addrs (the order is
// utunSetAddrsCommands').
func (d *Device) SetAddrs(addrs []netip.Prefix) error {
	d.filter.set(addrs)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := runTools(d.name, utunSetAddrsCommands(d.name, d.addrs, addrs)); err != nil {
		return fmt.Errorf("interface %s: %w", d.name, err)
	}
	d.addrs = slices.Clone(addrs)
	if err := waitUsable(addrs, usableWait); err != nil {
		d.log.Warn("kernel TUN device addresses not usable yet", "iface", d.name, "err", err)
	}
	return nil
}

// checkConflicts lists the host's interface addresses and its routing
// table (the routing socket, golang.org/x/net/route) and returns a
// *ConflictError for the first that overlaps a mesh prefix.
func checkConflicts(prefixes []netip.Prefix) error {
	ifaces, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("listing interfaces: %w", err)
	}
	names := make(map[int]string, len(ifaces))
	var existing []existingNet
	for _, ifc := range ifaces {
		names[ifc.Index] = ifc.Name
		addrs, err := ifc.Addrs()
		if err != nil {
			return fmt.Errorf("listing addresses of %s: %w", ifc.Name, err)
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if p, ok := ipNetPrefix(n); ok {
					existing = append(existing, existingNet{Prefix: p, Kind: "address", Interface: ifc.Name})
				}
			}
		}
	}
	rib, err := route.FetchRIB(unix.AF_UNSPEC, route.RIBTypeRoute, 0)
	if err != nil {
		return fmt.Errorf("reading the routing table: %w", err)
	}
	msgs, err := route.ParseRIB(route.RIBTypeRoute, rib)
	if err != nil {
		return fmt.Errorf("parsing the routing table: %w", err)
	}
	for _, m := range msgs {
		rm, ok := m.(*route.RouteMessage)
		if !ok {
			continue
		}
		if p, ok := routeDst(rm); ok {
			e := existingNet{Prefix: p, Kind: "route", Interface: names[rm.Index]}
			switch {
			case rm.Flags&unix.RTF_BLACKHOLE != 0:
				e.RouteType = "blackhole"
			case rm.Flags&unix.RTF_REJECT != 0:
				e.RouteType = "reject"
			}
			existing = append(existing, e)
		}
	}
	return firstConflict(prefixes, existing)
}

// routeDst is a route's destination with its prefix length: a host route
// has none, a network route has its netmask.
func routeDst(rm *route.RouteMessage) (netip.Prefix, bool) {
	if len(rm.Addrs) <= unix.RTAX_NETMASK {
		return netip.Prefix{}, false
	}
	var dst netip.Addr
	switch a := rm.Addrs[unix.RTAX_DST].(type) {
	case *route.Inet4Addr:
		dst = netip.AddrFrom4(a.IP)
	case *route.Inet6Addr:
		dst = netip.AddrFrom16(a.IP)
	default:
		return netip.Prefix{}, false // link-layer entries and the like
	}
	if rm.Flags&unix.RTF_HOST != 0 {
		return netip.PrefixFrom(dst, dst.BitLen()), true
	}
	var mask []byte
	switch m := rm.Addrs[unix.RTAX_NETMASK].(type) {
	case *route.Inet4Addr:
		mask = m.IP[:]
	case *route.Inet6Addr:
		mask = m.IP[:]
	case nil:
		return netip.PrefixFrom(dst, 0), true // the default route
	default:
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(dst, maskBits(mask)), true
}

// ipNetPrefix converts a net.IPNet from net.Interface.Addrs.
func ipNetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if bits != a.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}
