// Package lan finds mesh members on the local network with no server: it
// sends sealed mesh messages (opaque to this package) to an IPv4 multicast
// group on every local interface, and hands what members of the group send
// to its caller. The overlay's swarm mode uses it to announce itself and
// learn the direct address of every member on the same LAN.
//
// Only sealed messages travel here (first byte mesh.SealedHeader, at most
// mesh.MaxSealed bytes); anything else read from the group is dropped. The
// group is reachable by anything on the LAN, so reading is bounded in size
// and in rate before the caller spends an AEAD open on a datagram; the
// caller authenticates what it gets (another mesh's messages, or garbage,
// fail to open and are ignored).
//
// Datagrams are sent with TTL 1, so they never leave the link, and with
// multicast loopback on, so nodes on one host (and tests) find each other.
package lan

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv4"
	"golang.org/x/time/rate"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/transports"
)

// DefaultGroup is the multicast group and port of LAN discovery: an
// organisation-local scope address (239.255.0.0/16, RFC 2365) that never
// leaves a site, and a fixed port beside the direct path's default.
var DefaultGroup = netip.MustParseAddrPort("239.255.77.77:51899")

// Limits.
const (
	// maxInterfaces bounds the interfaces joined and sent on: a machine
	// with more (containers, VPNs) still gets discovery on the first 16 in
	// index order, and one Send costs at most 16 datagrams.
	maxInterfaces = 16

	// recvRate and recvBurst bound the datagrams handed to OnMessage per
	// second. Each member announces once per 15 s, so a LAN of a hundred
	// members, even of several meshes, stays far below; a flood is dropped
	// here, before the caller spends an AEAD open on it.
	recvRate  = 100
	recvBurst = 50

	// multicastTTL keeps datagrams on the link: discovery is for members
	// one hop apart; routers do not forward them.
	multicastTTL = 1
)

// Config configures a Discovery. OnMessage is required.
type Config struct {
	// Group is the multicast group and port; the zero value is
	// DefaultGroup. Members must use the same.
	Group netip.AddrPort

	// Interfaces names the interfaces to join and send on. Empty means
	// every interface that is up, multicast-capable, not loopback and has
	// an IPv4 address, looked up again on every Send so that an interface
	// that comes up later (Wi-Fi) is used. Naming "lo" works for tests on
	// one host.
	Interfaces []string

	// OnMessage receives each sealed message read from the group with its
	// source address (the sender's interface address and sending port, not
	// its direct socket). It is called from one goroutine with a copy the
	// callee owns; it should return quickly.
	OnMessage func(from netip.AddrPort, msg []byte)

	Logger *slog.Logger
}

// Discovery is a joined multicast group.
type Discovery struct {
	cfg   Config
	log   *slog.Logger
	group *net.UDPAddr
	rc    *ipv4.PacketConn // bound to the group's port: receives
	rconn net.PacketConn
	sc    *ipv4.PacketConn // an ephemeral port: sends
	sconn net.PacketConn
	limit *rate.Limiter

	mu     sync.Mutex // serialises Send and guards joined
	joined map[int]bool

	wg        sync.WaitGroup
	closeOnce sync.Once

	received, dropsRate, dropsBad atomic.Uint64
}

// New opens the group's sockets, joins the group on the interfaces and
// starts reading. A machine with no usable interface yet is not an error:
// Send joins interfaces as they appear.
func New(cfg Config) (*Discovery, error) {
	if cfg.OnMessage == nil {
		return nil, errors.New("lan: no OnMessage func")
	}
	if !cfg.Group.IsValid() {
		cfg.Group = DefaultGroup
	}
	if !cfg.Group.Addr().Is4() || !cfg.Group.Addr().IsMulticast() || cfg.Group.Port() == 0 {
		return nil, fmt.Errorf("lan: group %s: want an IPv4 multicast address and a port", cfg.Group)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Discovery{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "lan"),
		group:  net.UDPAddrFromAddrPort(cfg.Group),
		limit:  rate.NewLimiter(recvRate, recvBurst),
		joined: make(map[int]bool),
	}
	var err error
	// Binding the group address (not 0.0.0.0) receives only this group's
	// datagrams; Go sets SO_REUSEADDR on multicast binds, so several nodes
	// on one host share the port and each gets every datagram.
	if d.rconn, err = net.ListenPacket("udp4", cfg.Group.String()); err != nil {
		return nil, fmt.Errorf("lan: listening on %s: %w", cfg.Group, err)
	}
	d.rc = ipv4.NewPacketConn(d.rconn)
	if d.sconn, err = net.ListenPacket("udp4", "0.0.0.0:0"); err != nil {
		d.rconn.Close()
		return nil, fmt.Errorf("lan: opening the sending socket: %w", err)
	}
	d.sc = ipv4.NewPacketConn(d.sconn)
	if err := errors.Join(d.sc.SetMulticastTTL(multicastTTL), d.sc.SetMulticastLoopback(true)); err != nil {
		d.rconn.Close()
		d.sconn.Close()
		return nil, fmt.Errorf("lan: configuring the sending socket: %w", err)
	}
	d.mu.Lock()
	ifs, err := d.joinLocked()
	d.mu.Unlock()
	if err != nil {
		d.log.Warn("LAN discovery: no interface yet", "err", err)
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.readLoop()
	}()
	d.log.Info("LAN discovery on", "group", cfg.Group.String(), "interfaces", ifaceNames(ifs))
	return d, nil
}

// Close leaves the group, closes the sockets and waits for the reader. It
// is idempotent.
func (d *Discovery) Close() error {
	d.closeOnce.Do(func() {
		d.rconn.Close() // leaves every group the socket joined
		d.sconn.Close()
		d.wg.Wait()
	})
	return nil
}

// Send sends msg, a sealed mesh message, to the group on every interface
// (joining interfaces that appeared since the last call). It fails only
// when it was sent on no interface.
func (d *Discovery) Send(msg []byte) error {
	if transports.Classify(msg) != transports.PayloadSealed {
		return fmt.Errorf("lan: not a sealed mesh message (%d bytes)", len(msg))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ifs, err := d.joinLocked()
	if err != nil {
		return err
	}
	var errs []error
	sent := 0
	for _, ifc := range ifs {
		// The interface and source address go with each datagram
		// (IP_PKTINFO), so one socket serves every interface and the
		// receiver sees the address it can reach this node at.
		cm := &ipv4.ControlMessage{IfIndex: ifc.index, Src: ifc.addr.AsSlice()}
		if _, err := d.sc.WriteTo(msg, cm, d.group); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ifc.name, err))
			continue
		}
		sent++
	}
	if sent == 0 {
		return fmt.Errorf("lan: sending to %s: %w", d.cfg.Group, errors.Join(errs...))
	}
	if len(errs) > 0 {
		d.log.Debug("LAN discovery: not sent on every interface", "err", errors.Join(errs...))
	}
	return nil
}

// Stats counts what the reader saw.
type Stats struct {
	Received  uint64 // sealed messages handed to OnMessage (counted when it returns)
	DropsRate uint64 // datagrams over the rate limit
	DropsBad  uint64 // datagrams that are not sealed mesh messages
}

// Stats returns the counters.
func (d *Discovery) Stats() Stats {
	return Stats{Received: d.received.Load(), DropsRate: d.dropsRate.Load(), DropsBad: d.dropsBad.Load()}
}

func (d *Discovery) readLoop() {
	// One byte more than the largest message tells an oversized datagram
	// (truncated by the kernel) from one that fits exactly.
	buf := make([]byte, mesh.MaxSealed+1)
	for {
		n, _, src, err := d.rc.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				d.log.Warn("LAN discovery: reading stopped", "err", err)
			}
			return
		}
		from, ok := src.(*net.UDPAddr)
		if !ok {
			continue
		}
		if transports.Classify(buf[:n]) != transports.PayloadSealed {
			d.dropsBad.Add(1)
			continue
		}
		if !d.limit.Allow() {
			d.dropsRate.Add(1)
			continue
		}
		ap := from.AddrPort()
		d.cfg.OnMessage(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), append([]byte(nil), buf[:n]...))
		d.received.Add(1) // after the call, so a count seen means handled
	}
}

// iface is an interface discovery uses, with the IPv4 address it sends
// from.
type iface struct {
	name  string
	index int
	addr  netip.Addr
}

func ifaceNames(ifs []iface) []string {
	out := make([]string, len(ifs))
	for i, f := range ifs {
		out[i] = f.name
	}
	return out
}

// joinLocked lists the interfaces to use and joins the group on those not
// joined yet. d.mu must be held.
func (d *Discovery) joinLocked() ([]iface, error) {
	ifs, err := d.interfaces()
	if err != nil {
		return nil, err
	}
	for _, f := range ifs {
		if d.joined[f.index] {
			continue
		}
		ni := &net.Interface{Index: f.index, Name: f.name}
		if err := d.rc.JoinGroup(ni, d.group); err != nil {
			d.log.Debug("LAN discovery: joining group", "interface", f.name, "err", err)
			continue
		}
		d.joined[f.index] = true
	}
	return ifs, nil
}

// interfaces returns the configured interfaces, or every usable one.
func (d *Discovery) interfaces() ([]iface, error) {
	var cands []net.Interface
	if len(d.cfg.Interfaces) > 0 {
		for _, name := range d.cfg.Interfaces {
			ni, err := net.InterfaceByName(name)
			if err != nil {
				return nil, fmt.Errorf("lan: interface %q: %w", name, err)
			}
			cands = append(cands, *ni)
		}
	} else {
		all, err := net.Interfaces()
		if err != nil {
			return nil, fmt.Errorf("lan: listing interfaces: %w", err)
		}
		for _, ni := range all {
			if ni.Flags&net.FlagUp != 0 && ni.Flags&net.FlagMulticast != 0 && ni.Flags&net.FlagLoopback == 0 {
				cands = append(cands, ni)
			}
		}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].Index < cands[j].Index })
	var out []iface
	for _, ni := range cands {
		if len(out) == maxInterfaces {
			break
		}
		if ni.Flags&net.FlagUp == 0 {
			continue
		}
		if a, ok := firstIPv4(&ni); ok {
			out = append(out, iface{name: ni.Name, index: ni.Index, addr: a})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("lan: no interface that is up with an IPv4 address")
	}
	return out, nil
}

func firstIPv4(ni *net.Interface) (netip.Addr, bool) {
	addrs, err := ni.Addrs()
	if err != nil {
		return netip.Addr{}, false
	}
	for _, a := range addrs {
		if p, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(p.IP); ok && ip.Unmap().Is4() {
				return ip.Unmap(), true
			}
		}
	}
	return netip.Addr{}, false
}
