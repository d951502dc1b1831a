package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"

	"golang.org/x/sys/windows"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/windows/tunnel/winipcfg"
)

// On Windows the device is a Wintun adapter made by wireguard-go's tun
// package (wintun.dll must sit next to the executable) and configured
// through the IP Helper API with winipcfg, the WireGuard for Windows
// project's binding. Not run on a real Windows machine in this project's
// tests: compiled and vetted only (README, "Other operating systems").

// privilegeHint tells the user the two ways forward.
const privilegeHint = "run as Administrator, or drop --tun to use the userspace adapter (no privileges needed)"

// Device is a configured Wintun adapter.
type Device struct {
	handle
	luid winipcfg.LUID

	mu    sync.Mutex
	addrs []netip.Prefix // what the device holds, for SetAddrs
}

// Create creates the Wintun adapter described by cfg (with the GUID
// adapterGUID derives from its name) and configures it: MTU,
// no duplicate address detection or router discovery, the node's
// addresses with the mesh prefix length and a route for each mesh prefix.
// Like on Linux it refuses to shadow another interface's address or route
// in a mesh prefix; the check runs once the adapter exists, so that what an
// adapter of the same name left behind (Wintun reuses it) is not taken for
// someone else's.
func Create(cfg Config) (*Device, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	guid := adapterGUID(cfg.Name)
	t, err := tun.CreateTUNWithRequestedGUID(cfg.Name, &windows.GUID{
		Data1: binary.BigEndian.Uint32(guid[0:4]),
		Data2: binary.BigEndian.Uint16(guid[4:6]),
		Data3: binary.BigEndian.Uint16(guid[6:8]),
		Data4: [8]byte(guid[8:16]),
	}, cfg.MTU)
	if err != nil {
		switch {
		case errors.Is(err, windows.ERROR_MOD_NOT_FOUND), errors.Is(err, windows.ERROR_BAD_EXE_FORMAT):
			exe, _ := os.Executable()
			return nil, wintunMissingError(cfg.Name, runtime.GOARCH, exe, err)
		case errors.Is(err, windows.ERROR_ACCESS_DENIED):
			return nil, permissionError(cfg.Name)
		case errors.Is(err, windows.ERROR_ALREADY_EXISTS), errors.Is(err, windows.ERROR_OBJECT_ALREADY_EXISTS):
			// Same name, same GUID (adapterGUID).
			return nil, fmt.Errorf("creating TUN device %s: %w: %w (is another plurenet running with this --tun name?)", cfg.Name, ErrInUse, err)
		}
		return nil, fmt.Errorf("creating TUN device %s: %w", cfg.Name, err)
	}
	nt, ok := t.(*tun.NativeTun)
	if !ok {
		_ = t.Close()
		return nil, fmt.Errorf("creating TUN device %s: wireguard-go returned a %T, not a Wintun adapter", cfg.Name, t)
	}
	d := &Device{handle: handle{name: cfg.Name, log: cfg.Logger, filter: newDestFilter(cfg.Addrs)}, luid: winipcfg.LUID(nt.LUID())}
	d.tun = &filteredTUN{Device: t, filter: d.filter, log: d.log, name: d.name}
	if err := checkConflicts(d.luid, cfg.meshPrefixes()); err != nil {
		_ = d.Close()
		return nil, fmt.Errorf("creating TUN device %s: %w", cfg.Name, err)
	}
	if err := d.configure(cfg); err != nil {
		_ = d.Close()
		if errors.Is(err, windows.ERROR_ACCESS_DENIED) {
			return nil, permissionError(cfg.Name)
		}
		return nil, fmt.Errorf("configuring TUN device %s: %w", cfg.Name, err)
	}
	// DAD is off, so this should return at once; it costs one bind per
	// address to know.
	if err := waitUsable(cfg.Addrs, usableWait); err != nil {
		d.log.Warn("kernel TUN device addresses not usable yet", "iface", d.name, "err", err)
	}
	d.log.Info("kernel TUN device up", "iface", d.name, "mtu", cfg.MTU, "addrs", cfg.Addrs)
	return d, nil
}

// configure sets the interface of each address family the node uses, then
// its addresses (replacing any a reused adapter had) and routes.
func (d *Device) configure(cfg Config) error {
	for _, fam := range families(cfg.Addrs) {
		ipif, err := d.luid.IPInterface(fam)
		if err != nil {
			return fmt.Errorf("reading the %s interface: %w", familyName(fam), err)
		}
		// The addresses are ours by construction (derived from our key)
		// and there is nobody on a TUN to ask: DAD would only hold them
		// back, and router advertisements have no business here.
		ipif.DadTransmits = 0
		ipif.RouterDiscoveryBehavior = winipcfg.RouterDiscoveryDisabled
		ipif.NLMTU = uint32(cfg.MTU)
		if err := ipif.Set(); err != nil {
			return fmt.Errorf("setting the %s interface (MTU %d): %w", familyName(fam), cfg.MTU, err)
		}
		if err := d.luid.SetIPAddressesForFamily(fam, cfg.Addrs); err != nil {
			return fmt.Errorf("setting %s addresses %v: %w", familyName(fam), cfg.Addrs, err)
		}
	}
	if err := d.addRoutes(routedPrefixes(cfg.Addrs)); err != nil {
		return err
	}
	d.addrs = slices.Clone(cfg.Addrs)
	return nil
}

// addRoutes routes each prefix to the adapter (on-link: no next hop).
// Windows makes such a route for an address's prefix by itself; one that
// exists is fine.
func (d *Device) addRoutes(prefixes []netip.Prefix) error {
	for _, p := range prefixes {
		next := netip.IPv4Unspecified()
		if p.Addr().Is6() {
			next = netip.IPv6Unspecified()
		}
		if err := d.luid.AddRoute(p, next, 0); err != nil && !errors.Is(err, windows.ERROR_OBJECT_ALREADY_EXISTS) {
			return fmt.Errorf("adding route %s: %w", p, err)
		}
	}
	return nil
}

// SetAddrs replaces the device's addresses with addrs: new ones first, so
// the interface never goes without one, then the old ones go.
func (d *Device) SetAddrs(addrs []netip.Prefix) error {
	d.filter.set(addrs)
	d.mu.Lock()
	defer d.mu.Unlock()
	add, del := addrChanges(d.addrs, addrs)
	for _, p := range add {
		if err := d.luid.AddIPAddress(p); err != nil && !errors.Is(err, windows.ERROR_OBJECT_ALREADY_EXISTS) {
			return fmt.Errorf("interface %s: adding address %s: %w", d.name, p, err)
		}
	}
	for _, p := range del {
		if err := d.luid.DeleteIPAddress(p); err != nil && !errors.Is(err, windows.ERROR_NOT_FOUND) {
			return fmt.Errorf("interface %s: removing address %s: %w", d.name, p, err)
		}
	}
	// Windows may take an on-link route along with the address it came
	// with: route every mesh prefix again (one still there is fine).
	if err := d.addRoutes(routedPrefixes(addrs)); err != nil {
		return fmt.Errorf("interface %s: %w", d.name, err)
	}
	d.addrs = slices.Clone(addrs)
	if err := waitUsable(addrs, usableWait); err != nil {
		d.log.Warn("kernel TUN device addresses not usable yet", "iface", d.name, "err", err)
	}
	return nil
}

// checkConflicts lists every other interface's unicast addresses and
// routes (IP Helper tables) and returns a *ConflictError for the first
// that overlaps a mesh prefix.
func checkConflicts(own winipcfg.LUID, prefixes []netip.Prefix) error {
	addrs, err := winipcfg.GetUnicastIPAddressTable(windows.AF_UNSPEC)
	if err != nil {
		return fmt.Errorf("listing addresses: %w", err)
	}
	routes, err := winipcfg.GetIPForwardTable2(windows.AF_UNSPEC)
	if err != nil {
		return fmt.Errorf("listing routes: %w", err)
	}
	names := make(map[winipcfg.LUID]string)
	name := func(luid winipcfg.LUID) string {
		if n, ok := names[luid]; ok {
			return n
		}
		n := fmt.Sprintf("LUID %#x", uint64(luid))
		if row, err := luid.Interface(); err == nil {
			n = row.Alias()
		}
		names[luid] = n
		return n
	}
	var existing []existingNet
	for i := range addrs {
		a := &addrs[i]
		if a.InterfaceLUID == own {
			continue
		}
		existing = append(existing, existingNet{Prefix: netip.PrefixFrom(a.Address.Addr().WithZone(""), int(a.OnLinkPrefixLength)), Kind: "address", Interface: name(a.InterfaceLUID)})
	}
	for i := range routes {
		r := &routes[i]
		if r.InterfaceLUID == own {
			continue
		}
		p := r.DestinationPrefix.Prefix()
		existing = append(existing, existingNet{Prefix: netip.PrefixFrom(p.Addr().WithZone(""), p.Bits()), Kind: "route", Interface: name(r.InterfaceLUID)})
	}
	return firstConflict(prefixes, existing)
}

// families are the address families of addrs, IPv4 first.
func families(addrs []netip.Prefix) []winipcfg.AddressFamily {
	var v4, v6 bool
	for _, p := range addrs {
		v4 = v4 || p.Addr().Is4()
		v6 = v6 || p.Addr().Is6()
	}
	var out []winipcfg.AddressFamily
	if v4 {
		out = append(out, windows.AF_INET)
	}
	if v6 {
		out = append(out, windows.AF_INET6)
	}
	return out
}

func familyName(f winipcfg.AddressFamily) string {
	if f == windows.AF_INET {
		return "IPv4"
	}
	return "IPv6"
}
