package overlay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/transports/direct"
	"github.com/plures/plurenet/transports/lan"
)

// Direct mode: a mesh with no relay at all (home networks, no
// infrastructure). Sealed mesh messages travel as UDP datagrams between the
// members' direct sockets, and to a multicast group on the LAN:
//
//   - Every AnnounceInterval (and at start) the node seals one announcement
//     and sends it to the LAN group, to every configured static peer and
//     to every known member's address. The same bytes go everywhere, so a
//     member that gets two copies drops the second as a replay.
//   - A sealed message that opens with the mesh key is authenticated by
//     that alone: no relay vouches for the sender, so the sealed sender key
//     is taken as the sender (any holder of the mesh secret can join and
//     speak for itself anyway; the seal is what keeps everyone else out).
//   - The source address of an authenticated announcement that came to the
//     direct socket becomes the member's static path (direct.SetStatic);
//     one from a new address moves it there (roaming). An announcement
//     from the LAN group names the sender's direct socket in its
//     Candidates; it gives a path only to a member that has no usable one,
//     since unicast sources are what the member's WireGuard packets will
//     come from.
//   - A member heard of for the first time is answered at once, by unicast
//     to its address, so both sides know each other within a round trip.
//
// An on-path attacker without the secret can replay nothing (the replay
// guard), but could race a fresh announcement from another source address
// and so misdirect a path until the next announcement: that is denial of
// service, which such an attacker has anyway; WireGuard still protects
// every packet.

// DefaultDirectPort is the UDP port of the direct path in direct mode, so
// that static peers have a port to dial (and a firewall a port to open);
// the LAN discovery group uses the next one (lan.DefaultGroup).
const DefaultDirectPort = 51898

// Limits of direct mode.
const (
	// maxStaticPeers bounds Config.Peers: each costs one datagram per
	// announce interval and, for a name, one DNS lookup.
	maxStaticPeers = 64

	// resolveTimeout bounds the lookup of one static peer's host name, so
	// a dead DNS server delays an announce round by at most this much per
	// name (and only for names; IP literals need none).
	resolveTimeout = 2 * time.Second

	// candidatePrefix starts the candidates a direct-mode node announces:
	// "udp4 IP:PORT host", the form of docs/protocol.md 2.4's example.
	candidatePrefix = "udp4 "
	candidateSuffix = " host"
)

// StaticPeer is one entry of Config.Peers.
type StaticPeer struct {
	Key  nodekey.Public // zero: learned from the peer's first announcement
	Host string         // IPv4 literal or host name
	Port uint16
}

func (p StaticPeer) String() string {
	hp := net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port)))
	if p.Key.IsZero() {
		return hp
	}
	return p.Key.String() + "@" + hp
}

// ParsePeer parses "KEY@HOST:PORT" or "HOST:PORT" (see Config.Peers).
func ParsePeer(s string) (StaticPeer, error) {
	var p StaticPeer
	hp := s
	if k, rest, ok := strings.Cut(s, "@"); ok {
		key, err := nodekey.ParsePublic(k)
		if err != nil {
			return p, fmt.Errorf("peer %q: %w (want KEY@HOST:PORT, KEY as \"plurenet key public\" prints it)", s, err)
		}
		if key.IsZero() {
			return p, fmt.Errorf("peer %q: the all-zero key is no node's key", s)
		}
		p.Key, hp = key, rest
	}
	host, port, err := net.SplitHostPort(hp)
	if err != nil || host == "" {
		return StaticPeer{}, fmt.Errorf("peer %q: want HOST:PORT or KEY@HOST:PORT", s)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return StaticPeer{}, fmt.Errorf("peer %q: port %q: want 1 to 65535", s, port)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if !ip.Unmap().Is4() {
			return StaticPeer{}, fmt.Errorf("peer %q: only IPv4 addresses are supported on the direct path", s)
		}
		if ap := netip.AddrPortFrom(ip.Unmap(), uint16(n)); !validPeerAddr(ap) {
			return StaticPeer{}, fmt.Errorf("peer %q: not a unicast address", s)
		}
		host = ip.Unmap().String()
	} else if len(host) > 253 || strings.ContainsAny(host, " /\\@") {
		return StaticPeer{}, fmt.Errorf("peer %q: %q is neither an IPv4 address nor a host name", s, host)
	}
	p.Host, p.Port = host, uint16(n)
	return p, nil
}

func validPeerAddr(a netip.AddrPort) bool {
	ip := a.Addr()
	return ip.Is4() && a.Port() != 0 && !ip.IsUnspecified() && !ip.IsMulticast() && ip != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// checkDirectMode validates the direct-mode parts of cfg.
func (cfg *Config) checkDirectMode() error {
	if len(cfg.Relays) > 0 {
		return fmt.Errorf("transport %q uses no relay: drop the relays, or use transport %q for relays and direct paths", TransportDirect, TransportAuto)
	}
	if len(cfg.STUNServers) > 0 {
		return fmt.Errorf("transport %q uses no STUN server (there is no NAT traversal without a relay): drop them", TransportDirect)
	}
	if len(cfg.Peers) > maxStaticPeers {
		return fmt.Errorf("%d static peers: at most %d", len(cfg.Peers), maxStaticPeers)
	}
	for _, s := range cfg.Peers {
		if _, err := ParsePeer(s); err != nil {
			return err
		}
	}
	if cfg.LANGroup.IsValid() && (!cfg.LANGroup.Addr().Is4() || !cfg.LANGroup.Addr().IsMulticast() || cfg.LANGroup.Port() == 0) {
		return fmt.Errorf("LAN group %s: want an IPv4 multicast address and a port", cfg.LANGroup)
	}
	return nil
}

// directMode is the state of a node in direct mode.
type directMode struct {
	peers []StaticPeer
	lan   *lan.Discovery // nil with NoLAN
	ready atomic.Bool    // the device is up: messages may be handled

	// ctx ends host name lookups when the node closes.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	resolved map[int]resolvedPeer // index into peers
}

type resolvedPeer struct {
	addr netip.AddrPort
	at   time.Time
}

// startDirectMode creates the direct transport without ICE, with sealed
// mesh messages from its socket going to handleDirectSealed. LAN discovery
// starts later, in startDirectModeRecv, once the device is up.
func (n *Node) startDirectMode() error {
	dm := &directMode{resolved: make(map[int]resolvedPeer)}
	dm.ctx, dm.cancel = context.WithCancel(context.Background())
	for _, s := range n.cfg.Peers {
		p, err := ParsePeer(s)
		if err != nil {
			return err // checked in withDefaults; kept for safety
		}
		dm.peers = append(dm.peers, p)
	}
	n.dm = dm
	cfg := direct.Config{
		PrivateKey:      n.priv,
		ListenPort:      n.cfg.ListenPort,
		ListenAddr:      n.cfg.ListenAddr,
		DisableICE:      true,
		ExcludePrefixes: n.meshPrefixes(),
		OnMesh:          func(from netip.AddrPort, msg []byte) { n.handleDirectSealed(from, msg, false) },
		Deliver:         n.bind.Deliver,
		Logger:          n.log,
	}
	if cfg.ListenPort == 0 {
		cfg.ListenPort = DefaultDirectPort
	}
	d, err := direct.New(cfg)
	if err != nil && n.cfg.ListenPort == 0 && errors.Is(err, syscall.EADDRINUSE) {
		n.log.Warn("direct mode: default UDP port in use, using a random one: static peers must be given this node's actual port (plurenet status shows it)",
			"port", DefaultDirectPort)
		cfg.ListenPort = 0
		d, err = direct.New(cfg)
	}
	if err != nil {
		return fmt.Errorf("direct path: %w", err)
	}
	n.direct = d
	for _, p := range dm.peers {
		if ip, err := netip.ParseAddr(p.Host); err == nil && !p.Key.IsZero() && p.Key != n.pub {
			// Known key and address: the path exists before the peer
			// says a word, as with plain WireGuard.
			if err := d.SetStatic(p.Key, netip.AddrPortFrom(ip, p.Port)); err != nil {
				n.log.Warn("static peer", "peer", p.String(), "err", err)
			}
		}
	}
	return nil
}

// startDirectModeRecv lets direct-mode messages in (the device is up) and
// starts LAN discovery.
func (n *Node) startDirectModeRecv() error {
	dm := n.dm
	dm.ready.Store(true)
	if n.cfg.NoLAN {
		return nil
	}
	d, err := lan.New(lan.Config{
		Group:      n.cfg.LANGroup,
		Interfaces: n.cfg.LANInterfaces,
		OnMessage:  func(from netip.AddrPort, msg []byte) { n.handleDirectSealed(from, msg, true) },
		Logger:     n.log,
	})
	if err != nil {
		return fmt.Errorf("LAN discovery (turn it off with --lan-discovery off / Config.NoLAN): %w", err)
	}
	dm.lan = d
	return nil
}

// closeDirectMode stops LAN discovery and ends host name lookups.
func (n *Node) closeDirectMode() {
	if n.dm == nil {
		return
	}
	n.dm.cancel()
	if n.dm.lan != nil {
		n.dm.lan.Close()
	}
}

// handleDirectSealed opens a sealed message that came from the direct
// socket (viaLAN false: from is the member's direct address) or from the
// LAN group (viaLAN true: from is its multicast sender), and applies it.
func (n *Node) handleDirectSealed(from netip.AddrPort, payload []byte, viaLAN bool) {
	if !n.dm.ready.Load() {
		return // not up yet; announcements repeat
	}
	m, err := mesh.Open(n.keys, payload)
	if err != nil {
		// Another mesh on the same LAN, or garbage: not worth more.
		n.log.Debug("dropping sealed datagram", "from", from.String(), "lan", viaLAN, "err", err)
		return
	}
	if m.From == n.pub {
		return // our own multicast, looped back
	}
	// The seal is the authentication here: see the comment at the top.
	ev, err := n.members.Observe(m.From, m, time.Now())
	if err != nil {
		if !errors.Is(err, mesh.ErrReplay) {
			n.log.Info("rejected mesh message", "from", from.String(), "peer", m.From.ShortString(), "kind", m.Kind, "err", err)
		}
		return
	}
	if m.Kind == mesh.KindAnnounce {
		n.learnPath(m.From, from, m.Announce.Candidates, viaLAN)
	}
	switch ev.Kind {
	case mesh.EventJoined:
		n.log.Info("member joined", "peer", m.From.ShortString(), "name", m.Announce.Name, "lan", viaLAN)
		n.syncPeers()
		// The newcomer may not know us yet.
		if addr, _, ok := n.direct.StaticAddr(m.From); ok {
			if b, ok := n.seal(n.selfAnnounce()); ok {
				n.sendMeshTo(addr, b)
			}
		}
	case mesh.EventUpdated, mesh.EventLeft:
		if ev.Kind == mesh.EventLeft {
			n.log.Info("member left", "peer", m.From.ShortString())
		}
		n.syncPeers()
	}
}

// learnPath records where a member that announced itself can be reached.
func (n *Node) learnPath(key nodekey.Public, from netip.AddrPort, cands []string, viaLAN bool) {
	addr := from
	if viaLAN {
		var ok bool
		if addr, ok = lanAddr(from, cands); !ok {
			n.log.Debug("LAN announcement without a usable candidate", "peer", key.ShortString(), "from", from.String())
			return
		}
		// A usable unicast-learned (or configured) path wins: it is the
		// address the member's packets come from. Unless the member's
		// socket has another port now (it restarted on a random one).
		if cur, usable, ok := n.direct.StaticAddr(key); ok && usable && cur.Port() == addr.Port() {
			return
		}
	}
	if err := n.direct.SetStatic(key, addr); err != nil {
		n.log.Debug("direct path not set", "peer", key.ShortString(), "err", err)
	}
}

// parseCandidate reads a direct-mode candidate, "udp4 IP:PORT host"
// (other candidate forms, e.g. ICE's, are not for direct mode: ok false).
func parseCandidate(s string) (netip.AddrPort, bool) {
	f := strings.Fields(s)
	if len(f) < 2 || f[0] != "udp4" {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(f[1])
	if err != nil || !ap.Addr().Is4() || ap.Port() == 0 {
		return netip.AddrPort{}, false
	}
	return ap, true
}

// lanAddr picks a LAN member's direct address from the source of its
// multicast announcement and its candidates: the candidate on the source
// address if there is one, else the source address with the candidates'
// port (the member's socket listens on every address, and the source is
// the one on our link).
func lanAddr(src netip.AddrPort, cands []string) (netip.AddrPort, bool) {
	if !validPeerAddr(src) {
		return netip.AddrPort{}, false
	}
	var port uint16
	for _, c := range cands {
		ap, ok := parseCandidate(c)
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

// selfCandidates are the direct-socket addresses this node announces in
// direct mode (nil otherwise): the bound address, or every IPv4 address of
// the interfaces that are up, sorted so that the announcement only changes
// when the addresses do.
func (n *Node) selfCandidates() []string {
	if n.dm == nil || n.direct == nil {
		return nil
	}
	local := n.direct.LocalAddr()
	var ips []netip.Addr
	if a := local.Addr().Unmap(); !a.IsUnspecified() {
		ips = append(ips, a)
	} else if ifs, err := net.InterfaceAddrs(); err == nil {
		for _, ia := range ifs {
			p, ok := ia.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(p.IP)
			if ip = ip.Unmap(); ok && ip.Is4() && !ip.IsLoopback() && !ip.IsUnspecified() {
				ips = append(ips, ip)
			}
		}
	}
	slices.SortFunc(ips, func(a, b netip.Addr) int { return a.Compare(b) })
	ips = slices.Compact(ips)
	var out []string
	for _, ip := range ips {
		if len(out) == mesh.MaxCandidates {
			break
		}
		out = append(out, candidatePrefix+netip.AddrPortFrom(ip, local.Port()).String()+candidateSuffix)
	}
	if len(out) == 0 {
		// No address to name: receivers use the multicast source and
		// this port.
		out = append(out, candidatePrefix+netip.AddrPortFrom(netip.IPv4Unspecified(), local.Port()).String()+candidateSuffix)
	}
	return out
}

// sendDirectMode sends a sealed message (an announcement or a goodbye) to
// the LAN group, the static peers and every member with a known address.
// A goodbye (while closing) uses cached addresses only: no DNS lookups.
func (n *Node) sendDirectMode(b []byte, leaving bool) {
	dm := n.dm
	if dm == nil || n.direct == nil {
		return
	}
	if dm.lan != nil {
		if err := dm.lan.Send(b); err != nil {
			n.log.Debug("LAN announcement not sent", "err", err)
		}
	}
	dests := map[netip.AddrPort]bool{}
	for i, p := range dm.peers {
		addr, ok := n.staticPeerAddr(i, p, leaving)
		if !ok {
			continue
		}
		dests[addr] = true
		// A configured key with no usable path (never heard, or silent
		// for a while) gets its configured address back.
		if !leaving && !p.Key.IsZero() && p.Key != n.pub {
			if _, usable, ok := n.direct.StaticAddr(p.Key); !ok || !usable {
				if err := n.direct.SetStatic(p.Key, addr); err != nil {
					n.log.Debug("static peer", "peer", p.String(), "err", err)
				}
			}
		}
	}
	for _, m := range n.members.List() {
		if addr, _, ok := n.direct.StaticAddr(m.Key); ok {
			dests[addr] = true
		}
	}
	for addr := range dests {
		n.sendMeshTo(addr, b)
	}
}

func (n *Node) sendMeshTo(addr netip.AddrPort, b []byte) {
	if err := n.direct.SendMesh(addr, b); err != nil {
		n.log.Debug("mesh message not sent", "to", addr.String(), "err", err)
	}
}

// staticPeerAddr returns the address of configured peer i, looking a host
// name up again once per announce interval (unless cachedOnly).
func (n *Node) staticPeerAddr(i int, p StaticPeer, cachedOnly bool) (netip.AddrPort, bool) {
	if ip, err := netip.ParseAddr(p.Host); err == nil {
		return netip.AddrPortFrom(ip, p.Port), true
	}
	dm := n.dm
	dm.mu.Lock()
	r, ok := dm.resolved[i]
	dm.mu.Unlock()
	if cachedOnly || (ok && time.Since(r.at) < mesh.AnnounceInterval) {
		return r.addr, ok
	}
	ctx, cancel := context.WithTimeout(dm.ctx, resolveTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", p.Host)
	if err != nil || len(ips) == 0 {
		n.log.Warn("static peer: cannot resolve its host name; keeping its last address", "peer", p.String(), "err", err)
		return r.addr, ok
	}
	addr := netip.AddrPortFrom(ips[0].Unmap(), p.Port)
	if !validPeerAddr(addr) {
		n.log.Warn("static peer: its name resolves to an unusable address", "peer", p.String(), "addr", addr.String())
		return r.addr, ok
	}
	dm.mu.Lock()
	dm.resolved[i] = resolvedPeer{addr: addr, at: time.Now()}
	dm.mu.Unlock()
	return addr, true
}
