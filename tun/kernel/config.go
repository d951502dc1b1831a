// Package kernel gives plurenet a kernel TUN interface: a real network
// device whose packets wireguard-go reads and writes, so every program on
// the machine reaches mesh peers by their overlay IPs with no SOCKS or port
// forwarding. It needs privileges (CAP_NET_ADMIN on Linux, root on macOS,
// Administrator on Windows); the userspace adapter is the unprivileged
// alternative.
//
// Create makes the device with wireguard-go's tun package and configures
// it: MTU, link up, the node's addresses with the mesh prefix length, and a
// route for each mesh prefix. Before routing anything it refuses to shadow
// another network: a route or address that overlaps a mesh prefix on some
// other interface (another VPN, a LAN) is an error naming that interface
// (conflict.go). Every packet the mesh writes to the device must be
// addressed to the device's own addresses (filter.go).
//
// Per OS:
//   - Linux (device_linux.go): plurenet0 by default, configured over
//     netlink, with the kernel's GSO/GRO offloads where available; a TUN of
//     the same name left behind by an earlier run that crashed is removed
//     first.
//   - macOS (device_darwin.go): a utun interface ("utun" lets the kernel
//     pick utunN), configured with ifconfig(8) and route(8) (utun.go).
//   - Windows (device_windows.go): a Wintun adapter (wintun.dll next to the
//     executable), configured through the IP Helper API (winipcfg).
//   - elsewhere (device_other.go): Create fails saying so.
//
// Only the Linux code has run in this project's tests; the macOS and
// Windows code is compiled and vetted, and its pure parts (plan.go, utun.go,
// wintun.go) are tested on Linux.
package kernel

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
)

// Defaults and bounds of Config.
const (
	// DefaultName is the interface name when Config.Name is empty.
	DefaultName = "plurenet0"
	// DefaultMTU fits inside every path the mesh uses (relay frames,
	// direct UDP over IPv6 with its 1280-byte minimum) without
	// fragmentation, until path MTU is measured.
	DefaultMTU = 1280
	// minMTU is the smallest datagram every IPv4 host must accept
	// (RFC 791); less would break peers rather than protect them.
	minMTU = 576
	// minMTUIPv6 is IPv6's minimum link MTU (RFC 8200 §5): the kernel
	// disables IPv6 on a device with a smaller one.
	minMTUIPv6 = 1280
	// maxMTU is the largest IP packet (16-bit total length).
	maxMTU = 65535
	// maxNameLen is IFNAMSIZ minus the terminating NUL.
	maxNameLen = 15
	// maxAddrs bounds the addresses a device takes: a node has one per
	// family; a few more allow pinned extras, not a runaway config.
	maxAddrs = 16
)

// Config describes the device to create. The zero value of every field but
// Addrs gives a sensible default.
type Config struct {
	// Name is the interface name; DefaultName when empty. On macOS it
	// must be "utun" (the default there: the kernel picks utunN, and
	// Device.Name tells which) or "utunN".
	Name string
	// Addrs are the node's overlay addresses with the MESH prefix length
	// (e.g. 100.64.1.2/10 and fd12:3456:789a::1:2/48): the kernel then
	// routes each whole mesh prefix to the device.
	Addrs []netip.Prefix
	// MTU of the device; DefaultMTU when zero.
	MTU int
	// Logger receives lifecycle messages; slog.Default() when nil.
	Logger *slog.Logger
}

// withDefaults validates c and fills in defaults.
func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if len(c.Name) > maxNameLen || strings.ContainsAny(c.Name, "/ \t\n:%") || c.Name == "." || c.Name == ".." {
		return c, fmt.Errorf("TUN device name %q: want at most %d characters, no spaces, '/', ':' or '%%'", c.Name, maxNameLen)
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.MTU < minMTU || c.MTU > maxMTU {
		return c, fmt.Errorf("TUN device %s: MTU %d out of range [%d, %d]", c.Name, c.MTU, minMTU, maxMTU)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if len(c.Addrs) == 0 {
		return c, fmt.Errorf("TUN device %s: no addresses: a device without the node's overlay addresses routes nothing", c.Name)
	}
	if len(c.Addrs) > maxAddrs {
		return c, fmt.Errorf("TUN device %s: %d addresses, at most %d", c.Name, len(c.Addrs), maxAddrs)
	}
	seen := make(map[netip.Addr]bool, len(c.Addrs))
	addrs := make([]netip.Prefix, 0, len(c.Addrs))
	for _, p := range c.Addrs {
		if !p.IsValid() {
			return c, fmt.Errorf("TUN device %s: invalid address %v", c.Name, p)
		}
		if p.Addr().Is4In6() {
			// The prefix length of ::ffff:a.b.c.d/n counts IPv6 bits;
			// better to ask for the plain form than to guess.
			return c, fmt.Errorf("TUN device %s: address %s is IPv4-mapped IPv6: give it as IPv4", c.Name, p)
		}
		if p.Addr().Zone() != "" {
			return c, fmt.Errorf("TUN device %s: address %s has a zone", c.Name, p)
		}
		if p.Bits() == 0 {
			return c, fmt.Errorf("TUN device %s: address %s has prefix length 0, which would route all traffic into the mesh", c.Name, p)
		}
		if p.Addr().Is6() && c.MTU < minMTUIPv6 {
			return c, fmt.Errorf("TUN device %s: IPv6 address %s needs an MTU of at least %d, have %d", c.Name, p, minMTUIPv6, c.MTU)
		}
		if seen[p.Addr()] {
			return c, fmt.Errorf("TUN device %s: address %s given twice", c.Name, p.Addr())
		}
		seen[p.Addr()] = true
		addrs = append(addrs, p)
	}
	c.Addrs = addrs
	return c, nil
}

// meshPrefixes are the networks the device's addresses route to it.
func (c Config) meshPrefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(c.Addrs))
	for _, p := range c.Addrs {
		out = append(out, p.Masked())
	}
	return out
}

// ConflictError reports that a mesh prefix overlaps an address or route
// that already exists on another interface. Routing the mesh there would
// cut that network off (or be cut off by it), so Create refuses.
type ConflictError struct {
	// Prefix is the mesh prefix that would be routed to the TUN device.
	Prefix netip.Prefix
	// Existing is the overlapping address (with its prefix length) or
	// route destination.
	Existing netip.Prefix
	// Kind is "address" or "route".
	Kind string
	// Interface names the interface holding Existing; empty for routes
	// without one (blackhole, unreachable, prohibit).
	Interface string
	// RouteType describes a route without an interface ("blackhole"...).
	RouteType string
}

func (e *ConflictError) Error() string {
	where := fmt.Sprintf("on interface %q", e.Interface)
	if e.Interface == "" {
		where = fmt.Sprintf("(a %s route)", e.RouteType)
	}
	return fmt.Sprintf("mesh prefix %s overlaps %s %s %s: another VPN or network uses these addresses; remove it or choose a different mesh prefix",
		e.Prefix, e.Kind, e.Existing, where)
}

// permissionError is the error for missing privileges (privilegeHint,
// per OS, says which). It matches errors.Is(err, os.ErrPermission).
func permissionError(name string) error {
	return fmt.Errorf("creating TUN device %s: %w: %s", name, os.ErrPermission, privilegeHint)
}

// ErrInUse is returned (wrapped) when an interface of the requested name is
// a TUN device attached to a running process.
var ErrInUse = errors.New("interface in use by another process")
