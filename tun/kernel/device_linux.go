package kernel

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// privilegeHint tells the user the two ways forward.
const privilegeHint = "run as root or with CAP_NET_ADMIN, or drop --tun to use the userspace adapter (no privileges needed)"

// createTUN is tun.CreateTUN; tests replace it to produce errors a root
// test process cannot otherwise get.
var createTUN = tun.CreateTUN

// Device is a configured kernel TUN interface.
type Device struct {
	tun   tun.Device
	name  string
	index int
	nl    *netlink.Handle // bound to the namespace the device lives in
	log   *slog.Logger

	filter *destFilter // what the mesh may deliver: see filter.go

	closeOnce sync.Once
	closeErr  error
}

// Create creates and configures the TUN device described by cfg in the
// network namespace of the calling OS thread (the process's namespace unless
// the caller locked its goroutine into another). See the package comment for
// what it checks first.
func Create(cfg Config) (*Device, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	// The handle's sockets belong to the current namespace for good, so
	// Close finds the interface even when called from another thread.
	nl, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("creating TUN device %s: netlink: %w", cfg.Name, err)
	}
	if err := removeStale(nl, cfg.Name, cfg.Logger); err != nil {
		nl.Close()
		return nil, err
	}
	if err := checkConflicts(nl, cfg.meshPrefixes()); err != nil {
		nl.Close()
		return nil, fmt.Errorf("creating TUN device %s: %w", cfg.Name, err)
	}

	t, err := createTUN(cfg.Name, cfg.MTU)
	if err != nil {
		nl.Close()
		switch {
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			return nil, permissionError(cfg.Name)
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("creating TUN device %s: %w: %w", cfg.Name, ErrInUse, err)
		}
		return nil, fmt.Errorf("creating TUN device %s: %w", cfg.Name, err)
	}
	d := &Device{name: cfg.Name, nl: nl, log: cfg.Logger, filter: newDestFilter(cfg.Addrs)}
	d.tun = &nsTUN{filteredTUN: &filteredTUN{Device: t, filter: d.filter, log: d.log, name: d.name}, dev: d}
	if err := d.configure(cfg); err != nil {
		_ = d.Close()
		return nil, fmt.Errorf("configuring TUN device %s: %w", cfg.Name, err)
	}
	d.log.Info("kernel TUN device up", "iface", d.name, "mtu", cfg.MTU, "addrs", cfg.Addrs,
		"batch", t.BatchSize(), "offload", t.BatchSize() > 1)
	return d, nil
}

// configure brings the device up with its addresses and makes sure each
// mesh prefix is routed to it.
func (d *Device) configure(cfg Config) error {
	link, err := d.nl.LinkByName(d.name)
	if err != nil {
		return fmt.Errorf("finding the new interface: %w", err)
	}
	d.index = link.Attrs().Index
	if link.Attrs().MTU != cfg.MTU {
		if err := d.nl.LinkSetMTU(link, cfg.MTU); err != nil {
			return fmt.Errorf("setting MTU %d: %w", cfg.MTU, err)
		}
	}
	d.promoteSecondaries()
	// Up before addresses: IPv4 adds prefix routes only for addresses of a
	// running interface.
	if err := d.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing the link up: %w", err)
	}
	for _, p := range cfg.Addrs {
		if err := d.addAddr(link, p); err != nil {
			return err
		}
	}
	for _, p := range cfg.meshPrefixes() {
		if p.Bits() == p.Addr().BitLen() {
			continue // a host address routes no prefix
		}
		if err := d.ensureRoute(p); err != nil {
			return err
		}
	}
	d.waitLocal(cfg.Addrs)
	return nil
}

func (d *Device) addAddr(link netlink.Link, p netip.Prefix) error {
	a := &netlink.Addr{IPNet: ipNet(p)}
	if p.Addr().Is6() {
		// No duplicate address detection: the address is ours by
		// construction (derived from our key) and a point-to-point TUN
		// has no neighbours to ask; DAD would only leave it "tentative"
		// and unusable for a second.
		a.Flags = unix.IFA_F_NODAD
	}
	if err := d.nl.AddrAdd(link, a); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding address %s: %w", p, err)
	}
	return nil
}

// SetAddrs replaces the device's addresses with addrs (the mesh's IPv4
// collision rule can move a node's address at run time). New addresses are
// added before old ones go, so the mesh prefix routes stay in place.
//
// The new IPv4 shares the old one's subnet (the mesh prefix), so the kernel
// adds it as a secondary address, and deleting the primary deletes its
// secondaries with it unless promote_secondaries is on (configure turns it
// on where /proc/sys allows). Whatever the kernel took along is added
// again at the end.
func (d *Device) SetAddrs(addrs []netip.Prefix) error {
	// The filter moves first: an old address may now be another member's,
	// and from now on it is not ours to deliver to.
	d.filter.set(addrs)
	link, err := d.nl.LinkByIndex(d.index)
	if err != nil {
		return fmt.Errorf("interface %s: %w", d.name, err)
	}
	want := make(map[netip.Prefix]bool, len(addrs))
	for _, p := range addrs {
		want[p] = true
		if err := d.addAddr(link, p); err != nil {
			return fmt.Errorf("interface %s: %w", d.name, err)
		}
	}
	have, err := d.addrs(link)
	if err != nil {
		return err
	}
	for p, a := range have {
		if !want[p] {
			if err := d.nl.AddrDel(link, a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("interface %s: removing address %s: %w", d.name, p, err)
			}
		}
	}
	if have, err = d.addrs(link); err != nil {
		return err
	}
	for _, p := range addrs {
		if have[p] != nil {
			continue
		}
		if err := d.addAddr(link, p); err != nil {
			return fmt.Errorf("interface %s: %w", d.name, err)
		}
		if p.Bits() != p.Addr().BitLen() {
			if err := d.ensureRoute(p.Masked()); err != nil {
				return fmt.Errorf("interface %s: %w", d.name, err)
			}
		}
	}
	d.waitLocal(addrs)
	return nil
}

// addrs lists the device's addresses, link-local ones left out.
func (d *Device) addrs(link netlink.Link) (map[netip.Prefix]*netlink.Addr, error) {
	list, err := d.nl.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("interface %s: listing addresses: %w", d.name, err)
	}
	out := make(map[netip.Prefix]*netlink.Addr, len(list))
	for i := range list {
		ip, ok := netip.AddrFromSlice(list[i].IP)
		if !ok || ip.Unmap().IsLinkLocalUnicast() {
			continue
		}
		ones, _ := list[i].Mask.Size()
		out[netip.PrefixFrom(ip.Unmap(), ones)] = &list[i]
	}
	return out, nil
}

// promoteSecondaries asks the kernel to keep an interface's secondary IPv4
// addresses when its primary one is deleted (see SetAddrs). /proc/sys/net
// belongs to the network namespace of the calling thread, which is the
// device's in Create. Failure (a read-only /proc/sys in a container) only
// costs a moment without the mesh route when the address moves.
func (d *Device) promoteSecondaries() {
	path := "/proc/sys/net/ipv4/conf/" + d.name + "/promote_secondaries"
	if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
		d.log.Debug("cannot turn on promote_secondaries; an IPv4 move re-adds the address instead", "iface", d.name, "err", err)
	}
}

// Bounds of waitLocal. The kernel installs an IPv6 address's local route
// from a workqueue a moment after the address is added (even without DAD);
// until then packets to the address are dropped. A few milliseconds is
// normal; a second means something else is wrong and waiting longer would
// not help.
const (
	localRouteWait = time.Second
	localRoutePoll = 5 * time.Millisecond
)

// waitLocal waits until the kernel delivers packets for each address
// locally, so the first packets wireguard-go writes are not dropped. It
// only logs if that takes too long: the device still works once the
// kernel catches up.
func (d *Device) waitLocal(addrs []netip.Prefix) {
	deadline := time.Now().Add(localRouteWait)
	for _, p := range addrs {
		for {
			routes, err := d.nl.RouteGet(p.Addr().AsSlice())
			if err == nil && len(routes) > 0 && routes[0].Type == unix.RTN_LOCAL {
				break
			}
			if time.Now().After(deadline) {
				d.log.Warn("kernel has not made an address local yet", "iface", d.name, "addr", p.Addr(), "err", err)
				return
			}
			time.Sleep(localRoutePoll)
		}
	}
}

// ensureRoute adds a route for prefix p through the device unless the
// kernel already made one for the address.
func (d *Device) ensureRoute(p netip.Prefix) error {
	filter := &netlink.Route{LinkIndex: d.index, Dst: ipNet(p)}
	routes, err := d.nl.RouteListFiltered(family(p), filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_DST)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return fmt.Errorf("listing routes for %s: %w", p, err)
	}
	if len(routes) > 0 {
		return nil
	}
	route := &netlink.Route{LinkIndex: d.index, Dst: ipNet(p), Scope: netlink.SCOPE_LINK}
	if err := d.nl.RouteAdd(route); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding route %s: %w", p, err)
	}
	return nil
}

// TUN is the device for wireguard-go's device.NewDevice. Someone must
// consume its Events channel (wireguard-go's device does); closing it is
// fine, Close still removes the interface.
func (d *Device) TUN() tun.Device { return d.tun }

// nsTUN is wireguard-go's TUN with an MTU method that works from any
// thread: the original asks the kernel through a socket of the calling
// thread's namespace, which fails when the device lives in another one (a
// test namespace entered only while creating it).
type nsTUN struct {
	*filteredTUN
	dev *Device
}

func (t *nsTUN) MTU() (int, error) {
	link, err := t.dev.nl.LinkByIndex(t.dev.index)
	if err != nil {
		return 0, fmt.Errorf("MTU of TUN device %s: %w", t.dev.name, err)
	}
	return link.Attrs().MTU, nil
}

// Dropped is the number of packets from the mesh the device refused
// because they were not addressed to its own addresses.
func (d *Device) Dropped() uint64 { return d.filter.dropped.Load() }

// Name is the interface name.
func (d *Device) Name() string { return d.name }

// Close closes the TUN and deletes the interface. It is idempotent.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		// Closing the last descriptor of a non-persistent TUN makes the
		// kernel delete the interface, but the runtime may close it a
		// moment later and a copy of the descriptor may live on in a
		// child process: delete it explicitly too.
		errTUN := d.tun.Close()
		errLink := d.deleteLink()
		d.nl.Close()
		if errTUN != nil {
			errTUN = fmt.Errorf("closing TUN device %s: %w", d.name, errTUN)
		}
		d.closeErr = errors.Join(errTUN, errLink)
		d.log.Info("kernel TUN device closed", "iface", d.name)
	})
	return d.closeErr
}

// deleteLink deletes our interface if it still exists.
func (d *Device) deleteLink() error {
	if d.index == 0 {
		// configure failed before learning the index: go by name, but
		// only if it is a TUN (ours, created a moment ago).
		link, err := d.nl.LinkByName(d.name)
		if err != nil {
			return nil
		}
		if _, ok := link.(*netlink.Tuntap); !ok {
			return nil
		}
		d.index = link.Attrs().Index
	}
	link, err := d.nl.LinkByIndex(d.index)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil
		}
		return fmt.Errorf("deleting TUN device %s: %w", d.name, err)
	}
	if link.Attrs().Name != d.name {
		return nil // ifindexes are not reused quickly, but never delete a stranger
	}
	if err := d.nl.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("deleting TUN device %s: %w", d.name, err)
	}
	return nil
}

// removeStale deals with an existing interface called name: nothing to do
// if there is none; a TUN no process holds is a leftover of an earlier run
// (a persistent TUN, or one whose owner is gone) and is deleted; anything
// else is an error, because it belongs to someone else.
func removeStale(nl *netlink.Handle, name string, log *slog.Logger) error {
	link, err := nl.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("creating TUN device %s: looking for an existing interface: %w", name, err)
	}
	tt, ok := link.(*netlink.Tuntap)
	if !ok {
		return fmt.Errorf("creating TUN device %s: an interface with that name exists and is not a TUN device (type %s): remove it or choose another name", name, link.Type())
	}
	if tt.Mode != netlink.TUNTAP_MODE_TUN {
		return fmt.Errorf("creating TUN device %s: an interface with that name exists and is a TAP device, not a TUN: remove it or choose another name", name)
	}
	// Taking the device from a process that holds it would break that
	// process — most likely another plurenet.
	inUse, err := tunInUse(tt)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return permissionError(name)
		}
		return fmt.Errorf("creating TUN device %s: checking the existing TUN: %w", name, err)
	}
	if inUse {
		return fmt.Errorf("creating TUN device %s: %w (is another plurenet running?)", name, ErrInUse)
	}
	log.Info("removing stale TUN interface left by an earlier run", "iface", name, "index", link.Attrs().Index)
	if err := nl.LinkDel(link); err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return permissionError(name)
		}
		return fmt.Errorf("creating TUN device %s: removing the stale interface: %w", name, err)
	}
	return nil
}

// tunInUse reports whether a process holds the TUN device. The kernel
// deletes a non-persistent TUN when its last holder closes it, so one that
// exists is held. A multi-queue TUN reports its attached queues, and an up
// TUN with a holder has carrier. What remains — a persistent, single-queue
// TUN that is down — is probed by attaching to it, which the kernel refuses
// with EBUSY while another process is attached.
func tunInUse(tt *netlink.Tuntap) (bool, error) {
	if tt.NonPersist || tt.Queues > 0 || tt.Attrs().RawFlags&unix.IFF_LOWER_UP != 0 {
		return true, nil
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("opening /dev/net/tun: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(tt.Attrs().Name)
	if err != nil {
		return false, err
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if tt.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 {
		flags |= unix.IFF_MULTI_QUEUE // attaching requires the same mode
	}
	ifr.SetUint16(flags)
	switch err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); {
	case err == nil:
		return false, nil // we could attach: nobody else is
	case errors.Is(err, unix.EBUSY):
		return true, nil
	default:
		return false, fmt.Errorf("probing with TUNSETIFF: %w", err)
	}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}
