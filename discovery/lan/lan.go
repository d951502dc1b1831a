// Package lan is a discovery source that finds mesh members on the local
// network with no server: it sends sealed mesh messages (opaque to this
// package) to an IPv4 multicast group on every local interface, and hands
// what members of the group send to the node. The node's swarm mode uses it
// to announce itself and learn the direct address of every member on the
// same LAN (MemberAddr).
//
// Only sealed messages travel here (transports.Classify: first byte
// mesh.SealedHeader, at most mesh.MaxSealed bytes); anything else read from
// the group is dropped. The group is reachable by anything on the LAN, so
// reading is bounded in size and in rate per source before the node spends
// an AEAD open on a datagram, with members' sending sockets (Vouch) on
// budgets of their own that a flood from other sources cannot take; the
// node authenticates what it gets (another mesh's messages, or garbage,
// fail to open and are ignored).
//
// Datagrams are sent with TTL 1, so they never leave the link, and with
// multicast loopback on, so nodes on one host (and tests) find each other.
package lan

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/plures/plurenet/discovery"
	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/srclimit"
	"github.com/plures/plurenet/transports"
	"github.com/plures/plurenet/transports/direct"
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

	// The group reader's limits, per source (internal/srclimit), before
	// the caller spends an AEAD open on a datagram. A member's sending
	// socket, once the node vouched for it (Vouch), has a budget of its
	// own: one announcement per 15 s needs far less than 2 a second, and
	// no flood from other sources takes it. Every other source IP gets a
	// small budget, and all of them together share 100 a second (burst
	// 50): a LAN of a hundred members of several meshes stays below, and
	// a flood from spoofed sources takes no more.
	knownRate    = 2
	knownBurst   = 8
	sourceRate   = 1
	sourceBurst  = 4
	unknownRate  = 100
	unknownBurst = 50
	// maxSources bounds each table of per-source buckets.
	maxSources = 4096
	// vouchFor is how long Vouch lasts: past MemberTimeout (45 s), and
	// every announcement renews it.
	vouchFor = time.Minute

	// multicastTTL keeps datagrams on the link: discovery is for members
	// one hop apart; routers do not forward them.
	multicastTTL = 1
)

// Config configures a Source. The zero value is usable.
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

	Logger *slog.Logger
}

// Source is LAN discovery on one multicast group.
type Source struct {
	cfg   Config
	log   *slog.Logger
	group *net.UDPAddr
	limit *srclimit.Limiter

	// mu serialises Start, Announce and Close, and guards what follows.
	mu      sync.Mutex
	started bool
	closed  bool
	rc      *ipv4.PacketConn // bound to the group's port: receives
	rconn   net.PacketConn
	sc      *ipv4.PacketConn // an ephemeral port: sends
	sconn   net.PacketConn
	joined  map[int]bool
	stopCtx func() bool // unregisters the close at the end of Start's ctx

	wg sync.WaitGroup

	received, dropsRate, dropsBad atomic.Uint64
}

// New checks cfg; Start opens the sockets.
func New(cfg Config) (*Source, error) {
	if !cfg.Group.IsValid() {
		cfg.Group = DefaultGroup
	}
	if !cfg.Group.Addr().Is4() || !cfg.Group.Addr().IsMulticast() || cfg.Group.Port() == 0 {
		return nil, fmt.Errorf("lan: group %s: want an IPv4 multicast address and a port", cfg.Group)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Source{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "lan"),
		group: net.UDPAddrFromAddrPort(cfg.Group),
		limit: srclimit.New(srclimit.Config{
			KnownRate: knownRate, KnownBurst: knownBurst,
			Rate: sourceRate, Burst: sourceBurst,
			TotalRate: unknownRate, TotalBurst: unknownBurst,
			MaxSources: maxSources, VouchFor: vouchFor,
		}),
		joined: make(map[int]bool),
	}, nil
}

// Start opens the group's sockets, joins the group on the interfaces and
// reads until ctx ends or Close, handing each sealed message read to
// sink.Sealed with its source address (the sender's interface address and
// sending port, not its direct socket: see MemberAddr), from one
// goroutine, with a copy the callee owns. A machine with no usable
// interface yet is not an error: Announce joins interfaces as they appear.
func (d *Source) Start(ctx context.Context, sink discovery.Sink) error {
	if sink.Sealed == nil {
		return errors.New("lan: no Sealed func in the sink")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return ErrClosed
	case d.started:
		return errors.New("lan: started twice")
	}
	var err error
	// Binding the group address (not 0.0.0.0) receives only this group's
	// datagrams; Go sets SO_REUSEADDR on multicast binds, so several nodes
	// on one host share the port and each gets every datagram.
	if d.rconn, err = net.ListenPacket("udp4", d.cfg.Group.String()); err != nil {
		return fmt.Errorf("lan: listening on %s: %w", d.cfg.Group, err)
	}
	d.rc = ipv4.NewPacketConn(d.rconn)
	if d.sconn, err = net.ListenPacket("udp4", "0.0.0.0:0"); err != nil {
		d.rconn.Close()
		return fmt.Errorf("lan: opening the sending socket: %w", err)
	}
	d.sc = ipv4.NewPacketConn(d.sconn)
	if err := errors.Join(d.sc.SetMulticastTTL(multicastTTL), d.sc.SetMulticastLoopback(true)); err != nil {
		d.rconn.Close()
		d.sconn.Close()
		return fmt.Errorf("lan: configuring the sending socket: %w", err)
	}
	d.started = true
	ifs, err := d.joinLocked()
	if err != nil {
		d.log.Warn("LAN discovery: no interface yet", "err", err)
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.readLoop(sink.Sealed)
	}()
	// The end of ctx closes the sockets, which ends the reader; no
	// goroutine waits for it.
	d.stopCtx = context.AfterFunc(ctx, d.shut)
	d.log.Info("LAN discovery on", "group", d.cfg.Group.String(), "interfaces", ifaceNames(ifs))
	return nil
}

// ErrClosed is returned by Start and Announce after Close (or the end of
// Start's ctx).
var ErrClosed = errors.New("lan: closed")

// shut closes the sockets (leaving every group the receiving one joined).
func (d *Source) shut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.closed = true
	if d.started {
		d.rconn.Close()
		d.sconn.Close()
	}
}

// Close stops the source and waits for its reader. It is idempotent.
func (d *Source) Close() error {
	d.mu.Lock()
	stop := d.stopCtx
	d.mu.Unlock()
	if stop != nil {
		stop()
	}
	d.shut()
	d.wg.Wait()
	return nil
}

// Announce sends msg, a sealed mesh message, to the group on every
// interface (joining interfaces that appeared since the last call). It
// fails only when it was sent on no interface.
func (d *Source) Announce(msg []byte) error {
	if transports.Classify(msg) != transports.PayloadSealed {
		return fmt.Errorf("lan: not a sealed mesh message (%d bytes)", len(msg))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return ErrClosed
	case !d.started:
		return errors.New("lan: not started")
	}
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

// Vouch tells the source that a sealed message from src (as handed to the
// sink) was authenticated and fresh: src is a member's sending socket, and
// its datagrams get a member's budget for a while, which no flood from
// other sources can take.
func (d *Source) Vouch(src netip.AddrPort) {
	d.limit.Vouch(src, time.Now())
}

// Stats counts what the reader saw.
type Stats struct {
	Received  uint64 // sealed messages handed to the sink (counted when it returns)
	DropsRate uint64 // datagrams over their source's rate limit
	DropsBad  uint64 // datagrams that are not sealed mesh messages
}

// Stats returns the counters.
func (d *Source) Stats() Stats {
	return Stats{Received: d.received.Load(), DropsRate: d.dropsRate.Load(), DropsBad: d.dropsBad.Load()}
}

func (d *Source) readLoop(sealed func(netip.AddrPort, []byte)) {
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
		ap := from.AddrPort()
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if !d.limit.Allow(ap, false, time.Now()) {
			d.dropsRate.Add(1)
			continue
		}
		sealed(ap, append([]byte(nil), buf[:n]...))
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
// joined yet. d.mu must be held, and the source started.
func (d *Source) joinLocked() ([]iface, error) {
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
func (d *Source) interfaces() ([]iface, error) {
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

// MemberAddr picks a LAN member's direct socket from the source of its
// multicast announcement and the candidates it announced
// (discovery.Candidates): the candidate on the source address if there is
// one, else the source address with the candidates' port (the member's
// socket listens on every address, and the source is the one on our
// link). The source port is the member's sending socket, not its direct
// one, so it is never used.
func MemberAddr(src netip.AddrPort, cands []string) (netip.AddrPort, bool) {
	if !direct.ValidRemote(src) {
		return netip.AddrPort{}, false
	}
	var port uint16
	for _, c := range cands {
		ap, ok := discovery.ParseCandidate(c)
		if !ok {
			continue
		}
		if ap.Addr() == src.Addr() {
			return ap, true
		}
		if port == 0 {
			port = ap.Port()
		}
	}
	if port == 0 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(src.Addr(), port), true
}
