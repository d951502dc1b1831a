package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plures/plurenet/dns/hostsfile"
	"github.com/plures/plurenet/dns/names"
	"github.com/plures/plurenet/dns/resolved"
	"github.com/plures/plurenet/dns/resolver"
	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
)

// DNSPort is where the mesh resolver answers on the overlay addresses: the
// port every stub resolver asks, so that "dig @ADDR" and a resolv.conf
// nameserver line need nothing else.
const DNSPort = 53

// splitDNSCheck is splitDNSApplies; tests that run a node in a namespace
// of their own, with a fake resolved, replace it.
var splitDNSCheck = splitDNSApplies

// splitDNSTimeout bounds one systemd-resolved call made while the node
// holds its lock (after an IPv4 move): resolved answers in milliseconds.
const splitDNSTimeout = 5 * time.Second

// DNSConfig configures the mesh's name server (docs/architecture.md, "Names
// (DNS)"). The zero value serves the members' names under the default
// suffix on the overlay addresses, port 53, and with a kernel TUN registers
// split DNS with systemd-resolved.
type DNSConfig struct {
	// Off turns names over DNS off: no resolver, no split DNS, no hosts
	// file.
	Off bool
	// Suffix is what the names live under; "" means names.DefaultSuffix of
	// the topic. Any other value must pass names.ParseSuffix.
	Suffix string
	// Listen are loopback addresses where the resolver also serves the
	// programs of this host, UDP and TCP on each (port 0 picks one, the
	// same for both). Anything but loopback is refused: the resolver
	// answers only the mesh and loopback, so another address would be a
	// port open on the host's networks that answers no one.
	Listen []netip.AddrPort
	// HostsFile, when set, is a hosts file (normally /etc/hosts) in which
	// the node keeps a block of the members' names while it runs.
	HostsFile string
	// SplitDNSBus is the D-Bus address of systemd-resolved; "" means the
	// system bus.
	SplitDNSBus string
}

func (c DNSConfig) withDefaults(topic string, topicID [32]byte) (DNSConfig, error) {
	if c.Off {
		return c, nil
	}
	if c.Suffix == "" {
		c.Suffix = names.DefaultSuffix(topic, topicID)
	}
	s, err := names.ParseSuffix(c.Suffix)
	if err != nil {
		return c, err
	}
	c.Suffix = s
	for _, ap := range c.Listen {
		if !ap.Addr().IsLoopback() {
			return c, fmt.Errorf("dns listen %s: not a loopback address; the resolver answers only the mesh and this host (127.0.0.1:PORT or [::1]:PORT)", ap)
		}
	}
	return c, nil
}

// DNSStatus describes the node's name server.
type DNSStatus struct {
	// Address is where members (and, with a kernel TUN, this host) ask:
	// the IPv4 overlay address, port 53. Empty when it could not be served
	// there (Warnings says why).
	Address string `json:"address,omitempty"`
	Suffix  string `json:"suffix"`
	// Name is this node's own name under the suffix.
	Name string `json:"name,omitempty"`
	// Listen are the loopback sockets of Config.DNS.Listen.
	Listen []string `json:"listen,omitempty"`
	// SplitDNS is true while systemd-resolved routes the suffix to the
	// resolver on the TUN interface.
	SplitDNS bool `json:"splitDNS,omitempty"`
	// HostsFile is the hosts file whose block the node keeps.
	HostsFile string `json:"hostsFile,omitempty"`
	// Ambiguous lists the names two members claim, which resolve to
	// neither.
	Ambiguous []string `json:"ambiguous,omitempty"`
}

// dnsService is the node's name server and what keeps the host pointed at
// it: the resolver with its sockets, the systemd-resolved registration and
// the hosts-file block.
type dnsService struct {
	log    *slog.Logger
	suffix string
	srv    *resolver.Server
	hosts  *hostsfile.File
	listen []string
	table  atomic.Pointer[names.Table]

	mu       sync.Mutex // guards the fields below
	address  netip.AddrPort
	v4sock   net.PacketConn // kernel TUN: the UDP socket on the IPv4 overlay address
	link     *resolved.Link
	warnings []string
	warned   map[string]bool // ambiguous labels already warned about
}

// startDNS starts the name server; with DNS off it does nothing. Failing to
// serve on the overlay addresses (port 53 taken by a server bound to every
// address) is a warning, not a failure of the mesh; failing what the user
// asked for by name (Listen, HostsFile) is an error.
func (n *Node) startDNS(ctx context.Context, ula netip.Prefix) error {
	cfg := n.cfg.DNS
	if cfg.Off {
		return nil
	}
	log := n.log.With("component", "dns")
	srv, err := resolver.New(ctx, resolver.Config{
		Suffix:   cfg.Suffix,
		V4Prefix: n.cfg.V4Prefix,
		ULA:      ula,
		// The mesh and this host; everything else gets no answer, however
		// its packets reach the sockets (docs/security.md, "DNS resolver").
		Allow:  []netip.Prefix{n.cfg.V4Prefix, ula, netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		Logger: n.log,
	})
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	d := &dnsService{log: log, suffix: cfg.Suffix, srv: srv, warned: make(map[string]bool)}
	n.dns = d
	v4, v6 := n.Addrs()
	if err := d.serveOverlay(n.adapter, v4, v6); err != nil {
		log.Warn("members cannot ask this node for names", "err", err)
		d.warnings = append(d.warnings, err.Error())
	} else {
		d.address = netip.AddrPortFrom(v4, DNSPort)
	}
	for _, ap := range cfg.Listen {
		addr, err := d.serveHost(ap)
		if err != nil {
			return err
		}
		d.listen = append(d.listen, addr)
	}
	if cfg.HostsFile != "" {
		h, err := hostsfile.Open(hostsfile.Config{Path: cfg.HostsFile, Suffix: cfg.Suffix, Logger: n.log})
		if err != nil {
			return err
		}
		d.hosts = h
	}
	d.update(n.dnsTable(n.members.List(), v4))
	if k, ok := n.adapter.(*kernelAdapter); ok && d.address.IsValid() {
		d.registerSplitDNS(ctx, k.d.Name(), v4, v6, n.cfg.V4Prefix, ula, cfg.SplitDNSBus)
	}
	return nil
}

// serveOverlay serves UDP and TCP port 53 on the overlay addresses. The
// userspace stack's ":53" sockets cover every address it holds, moved or
// not. With a kernel TUN the TCP listener follows the addresses itself
// (overlayListener); UDP needs one socket per address, and the IPv4 one is
// replaced when the address moves (moveV4).
func (d *dnsService) serveOverlay(a adapter, v4, v6 netip.Addr) error {
	port := fmt.Sprintf(":%d", DNSPort)
	l, err := a.listen("tcp", port)
	if err != nil {
		return fmt.Errorf("dns on the overlay, TCP port %d: %w", DNSPort, err)
	}
	if err := d.srv.ServeListener(l); err != nil {
		return err
	}
	if _, ok := a.(*kernelAdapter); !ok {
		pc, err := a.listenPacket("udp", port)
		if err != nil {
			return fmt.Errorf("dns on the overlay, UDP port %d: %w", DNSPort, err)
		}
		return d.srv.ServePacketConn(pc)
	}
	pc6, err := a.listenPacket("udp6", netip.AddrPortFrom(v6, DNSPort).String())
	if err != nil {
		return fmt.Errorf("dns on the overlay: %w", err)
	}
	if err := d.srv.ServePacketConn(pc6); err != nil {
		return err
	}
	pc4, err := a.listenPacket("udp4", netip.AddrPortFrom(v4, DNSPort).String())
	if err != nil {
		return fmt.Errorf("dns on the overlay: %w", err)
	}
	if err := d.srv.ServePacketConn(pc4); err != nil {
		return err
	}
	d.v4sock = pc4
	return nil
}

// pickPortTries bounds how often serveHost picks another port when the
// TCP side of the one the system gave the UDP socket is taken.
const pickPortTries = 16

// serveHost serves UDP and TCP on a loopback address of the host and
// returns the address served.
func (d *dnsService) serveHost(ap netip.AddrPort) (string, error) {
	pc, l, bound, err := listenBoth(ap, net.ListenPacket)
	if err != nil {
		return "", err
	}
	if err := d.srv.ServePacketConn(pc); err != nil {
		l.Close()
		return "", err
	}
	if err := d.srv.ServeListener(l); err != nil {
		return "", err
	}
	return bound.String(), nil
}

// listenBoth opens a UDP and a TCP socket on the same address. Port 0
// lets the system pick the UDP port, and TCP takes the same number, which
// another program may hold (the two are separate port spaces): then the
// pair is tried again on a new port, up to pickPortTries times.
// listenPacket is net.ListenPacket (a test's stand-in picks a taken port).
func listenBoth(ap netip.AddrPort, listenPacket func(network, address string) (net.PacketConn, error)) (net.PacketConn, net.Listener, netip.AddrPort, error) {
	for try := 1; ; try++ {
		pc, err := listenPacket("udp", ap.String())
		if err != nil {
			return nil, nil, netip.AddrPort{}, fmt.Errorf("dns listen %s: %w", ap, err)
		}
		bound := netip.AddrPortFrom(ap.Addr(), uint16(pc.LocalAddr().(*net.UDPAddr).Port))
		l, err := net.Listen("tcp", bound.String())
		if err == nil {
			return pc, l, bound, nil
		}
		pc.Close()
		if ap.Port() != 0 || try == pickPortTries {
			return nil, nil, netip.AddrPort{}, fmt.Errorf("dns listen %s (TCP): %w", bound, err)
		}
	}
}

// dnsTable builds the names table from the remote members and this node.
func (n *Node) dnsTable(list []mesh.Member, selfV4 netip.Addr) *names.Table {
	ms := make([]names.Member, 0, len(list)+1)
	ms = append(ms, names.Member{Key: n.pub, Name: n.cfg.Name, V4: selfV4, V6: n.v6})
	for _, m := range list {
		ms = append(ms, names.Member{Key: m.Key, Name: m.Name, V4: m.V4, V6: m.V6})
	}
	t, err := names.NewTable(n.cfg.DNS.Suffix, ms)
	if err != nil {
		// The suffix was checked in withDefaults; nothing else fails.
		n.log.Error("dns: building the names table", "err", err)
		return nil
	}
	return t
}

// update makes t what the resolver and the hosts file say, and warns once
// about each name that two members claim. Callers serialise updates (the
// node calls it under n.mu), so a newer table is never overwritten by an
// older one.
func (d *dnsService) update(t *names.Table) {
	if t == nil {
		return
	}
	d.table.Store(t)
	if err := d.srv.Update(t); err != nil {
		d.log.Error("updating the resolver", "err", err)
	}
	if d.hosts != nil {
		if err := d.hosts.Update(t); err != nil {
			d.log.Warn("updating the hosts file", "err", err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := make(map[string]bool, len(t.Ambiguous()))
	for _, l := range t.Ambiguous() {
		now[l] = true
		if !d.warned[l] {
			d.log.Warn("two or more members claim one DNS name: it resolves to none of them; each keeps its NAME-KEY name (see plurenet status)", "name", l+"."+d.suffix)
		}
	}
	d.warned = now
}

// moveV4 follows the IPv4 overlay address to v4 (the collision rule moved
// it): a UDP socket on the new address, the old one retired, and
// systemd-resolved told.
func (d *dnsService) moveV4(a adapter, v4, v6 netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.address.IsValid() {
		return
	}
	d.address = netip.AddrPortFrom(v4, DNSPort)
	if d.v4sock == nil {
		return // the userspace stack's socket covers the new address
	}
	d.v4sock.Close()
	d.v4sock = nil
	pc, err := a.listenPacket("udp4", d.address.String())
	if err == nil {
		err = d.srv.ServePacketConn(pc)
	}
	if err != nil {
		d.log.Warn("serving DNS on the moved IPv4 address", "addr", d.address, "err", err)
		return
	}
	d.v4sock = pc
	if d.link != nil {
		ctx, cancel := context.WithTimeout(context.Background(), splitDNSTimeout)
		defer cancel()
		if err := d.link.SetServers(ctx, dnsServers(v4, v6)); err != nil {
			d.log.Warn("telling systemd-resolved the moved address", "err", err)
		}
	}
}

// dnsServers lists the resolver's overlay sockets as split DNS names them.
func dnsServers(v4, v6 netip.Addr) []netip.AddrPort {
	return []netip.AddrPort{netip.AddrPortFrom(v4, DNSPort), netip.AddrPortFrom(v6, DNSPort)}
}

// registerSplitDNS asks systemd-resolved to send the suffix's lookups (and
// the overlay's reverse lookups) to the resolver on the TUN interface. Where
// it cannot, or where the host's programs bypass resolved, the node logs
// how to point a resolver at it instead: names over DNS still work for
// whoever asks the resolver.
func (d *dnsService) registerSplitDNS(ctx context.Context, ifname string, v4, v6 netip.Addr, v4Prefix, ula netip.Prefix, bus string) {
	hint := resolved.Hint(netip.AddrPortFrom(v4, DNSPort), d.suffix)
	if ok, why := splitDNSCheck(); !ok {
		d.log.Info("split DNS not registered: "+why, "hint", hint)
		return
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		d.log.Warn("split DNS not registered", "err", fmt.Errorf("interface %s: %w", ifname, err), "hint", hint)
		return
	}
	domains := append([]string{d.suffix}, names.ReverseZones(v4Prefix)...)
	domains = append(domains, names.ReverseZones(ula)...)
	link, err := resolved.Register(ctx, resolved.Config{
		Index:      ifi.Index,
		Servers:    dnsServers(v4, v6),
		Domains:    domains,
		BusAddress: bus,
		Logger:     d.log,
	})
	var unavailable *resolved.UnavailableError
	switch {
	case errors.As(err, &unavailable):
		d.log.Info("split DNS not registered: "+unavailable.Error(), "hint", hint)
		return
	case err != nil:
		d.log.Warn("split DNS not registered", "err", err, "hint", hint)
		d.mu.Lock()
		d.warnings = append(d.warnings, err.Error())
		d.mu.Unlock()
		return
	}
	d.mu.Lock()
	d.link = link
	d.mu.Unlock()
	d.log.Info("split DNS registered with systemd-resolved", "interface", ifname, "suffix", d.suffix)
	if !resolved.UsedByHost(resolved.ResolvConf, resolved.NSSwitch) {
		d.log.Warn("programs on this host do not resolve through systemd-resolved ("+resolved.ResolvConf+" and "+resolved.NSSwitch+" bypass it), so the split DNS registration has no effect for them", "hint", hint)
	}
}

// closeLink reverts the split DNS registration. It comes before the TUN
// is deleted, so that resolved is told rather than left to notice.
func (d *dnsService) closeLink() {
	d.mu.Lock()
	link := d.link
	d.link = nil
	d.mu.Unlock()
	if link != nil {
		if err := link.Close(); err != nil {
			d.log.Warn("reverting split DNS", "err", err)
		}
	}
}

// close removes the hosts-file block and stops the resolver.
func (d *dnsService) close() {
	d.closeLink()
	if d.hosts != nil {
		if err := d.hosts.Close(); err != nil {
			d.log.Warn("removing the hosts file block", "err", err)
		}
	}
	d.srv.Close()
}

// status describes the service; keyNames gives each member's first name.
func (d *dnsService) status(self nodekey.Public) (*DNSStatus, map[nodekey.Public]string) {
	st := &DNSStatus{Suffix: d.suffix, Listen: d.listen}
	if d.hosts != nil {
		st.HostsFile = d.hosts.Path()
	}
	d.mu.Lock()
	if d.address.IsValid() {
		st.Address = d.address.String()
	}
	st.SplitDNS = d.link != nil
	d.mu.Unlock()
	byKey := make(map[nodekey.Public]string)
	if t := d.table.Load(); t != nil {
		for _, e := range t.Entries() {
			byKey[e.Key] = e.Names[0]
		}
		for _, l := range t.Ambiguous() {
			st.Ambiguous = append(st.Ambiguous, l+"."+d.suffix)
		}
	}
	st.Name = byKey[self]
	return st, byKey
}

// lookup resolves NAME.SUFFIX (any case, final dot optional) for Resolve:
// ok is false when host is not under the suffix.
func (d *dnsService) lookup(host string) (a netip.Addr, ok bool, err error) {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	label, under := strings.CutSuffix(h, "."+d.suffix)
	if !under {
		return netip.Addr{}, false, nil
	}
	t := d.table.Load()
	var e names.Entry
	found := false
	if t != nil && !strings.Contains(label, ".") {
		e, found = t.Lookup(label)
	}
	switch {
	case !found:
		return netip.Addr{}, true, fmt.Errorf("%w named %q (members: see \"plurenet status\")", ErrNoSuchMember, host)
	case e.V4.IsValid():
		return e.V4, true, nil
	}
	return e.V6, true, nil
}

// warningList returns what the user should know about names over DNS.
func (d *dnsService) warningList() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.warnings...)
}
