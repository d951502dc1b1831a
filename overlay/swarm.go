package overlay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"

	"github.com/plures/plurenet/discovery"
	"github.com/plures/plurenet/discovery/lan"
	"github.com/plures/plurenet/discovery/static"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/transports/direct"
)

// Swarm mode: a mesh with no relay at all (home networks, no
// infrastructure). Members find each other through discovery sources
// (discovery/lan, discovery/static; the DHT next) and talk over the direct
// transport without ICE. Sealed mesh messages travel as UDP datagrams
// between the members' direct sockets, and to a multicast group on the LAN:
//
//   - Every AnnounceInterval (and at start) the node seals one announcement
//     and hands it to every source (the LAN group), and sends it to every
//     address a source found (static peers) and to every known member's
//     address. The same bytes go everywhere, so a member that gets two
//     copies drops the second as a replay.
//   - A sealed message that opens with the mesh key is authenticated by
//     that alone: no relay vouches for the sender, so the sealed sender key
//     is taken as the sender (any holder of the mesh secret can join and
//     speak for itself anyway; the seal is what keeps everyone else out).
//     handleSealed (sealed.go) applies it like one from a relay.
//   - The source address of an authenticated announcement that came to the
//     direct socket becomes the member's static path (direct.SetStatic);
//     one from a new address moves it there (roaming). An announcement
//     from the LAN group names the sender's direct socket in its
//     Candidates (lan.MemberAddr); it gives a path only to a member that
//     has no usable one, since unicast sources are what the member's
//     WireGuard packets will come from.
//   - A member heard of for the first time is answered at once, by unicast
//     to its address, so both sides know each other within a round trip.
//
// An on-path attacker without the secret can replay nothing (the replay
// guard), but could race a fresh announcement from another source address
// and so misdirect a path until the next announcement: that is denial of
// service, which such an attacker has anyway; WireGuard still protects
// every packet.

// DefaultDirectPort is the UDP port of the direct path in swarm mode, so
// that static peers have a port to dial (and a firewall a port to open);
// the LAN discovery group uses the next one (lan.DefaultGroup).
const DefaultDirectPort = 51898

// discoverySource is what the node asks of a way to find members in swarm
// mode (discovery/lan, discovery/static, and next the Mainline DHT).
type discoverySource interface {
	// Start begins finding members, reporting to sink, until ctx ends or
	// Close; it returns once the source runs.
	Start(ctx context.Context, sink discovery.Sink) error
	// Announce carries the node's sealed announcement (or goodbye) where
	// the source reaches on its own (the LAN group). Addresses a source
	// reported with Found are the node's to send to.
	Announce(msg []byte) error
	// Close stops the source and waits for its goroutines; idempotent.
	Close() error
}

var (
	_ discoverySource = (*lan.Source)(nil)
	_ discoverySource = (*static.Source)(nil)
)

// checkSwarm validates the swarm-mode parts of cfg.
func (cfg *Config) checkSwarm() error {
	if len(cfg.Relays) > 0 {
		return fmt.Errorf("transport %q uses no relay: drop the relays, or use transport %q for relays and direct paths", TransportSwarm, TransportAuto)
	}
	if len(cfg.STUNServers) > 0 {
		return fmt.Errorf("transport %q uses no STUN server (there is no NAT traversal without a relay): drop them", TransportSwarm)
	}
	if len(cfg.Peers) > static.MaxPeers {
		return fmt.Errorf("%d static peers: at most %d", len(cfg.Peers), static.MaxPeers)
	}
	for _, s := range cfg.Peers {
		if _, err := static.ParsePeer(s); err != nil {
			return err
		}
	}
	// lan.New only checks its Config; the sockets open at Start.
	if _, err := lan.New(lan.Config{Group: cfg.LANGroup}); err != nil {
		return err
	}
	return nil
}

// swarmMode is the state of a node in swarm mode.
type swarmMode struct {
	sources []discoverySource
	lan     *lan.Source // also in sources; nil with NoLAN
	dht     *dhtState   // its source also in sources; nil without Config.DHT (swarmdht.go)
	fwd     *forwarder  // forwarded announcements (forward.go)

	mu    sync.Mutex
	found map[string]discovery.Peer // by Label: addresses to announce to
	// announced is set by the first announce round: a peer found after
	// it is sent an announcement at once, one found before was in it.
	announced bool
}

// startSwarm creates the direct transport without ICE, with sealed mesh
// messages from its socket going to handleSealed, and the discovery
// sources, which start in startDiscovery once the device is up.
func (n *Node) startSwarm() error {
	sw := &swarmMode{found: make(map[string]discovery.Peer), fwd: newForwarder()}
	n.swarm = sw
	var peers []static.Peer
	for _, s := range n.cfg.Peers {
		p, err := static.ParsePeer(s)
		if err != nil {
			return err // checked in withDefaults; kept for safety
		}
		peers = append(peers, p)
	}
	st, err := static.New(static.Config{Peers: peers, Logger: n.log})
	if err != nil {
		return err
	}
	sw.sources = append(sw.sources, st)
	if !n.cfg.NoLAN {
		sw.lan, err = lan.New(lan.Config{Group: n.cfg.LANGroup, Interfaces: n.cfg.LANInterfaces, Logger: n.log})
		if err != nil {
			return fmt.Errorf("LAN discovery (turn it off with --lan-discovery off / Config.NoLAN): %w", err)
		}
		sw.sources = append(sw.sources, sw.lan)
	}
	cfg := direct.Config{
		PrivateKey:      n.priv,
		ListenPort:      n.cfg.ListenPort,
		ListenAddr:      n.cfg.ListenAddr,
		DisableICE:      true,
		ExcludePrefixes: n.meshPrefixes(),
		OnMesh: func(from netip.AddrPort, msg []byte) {
			n.handleSealed(carrier{name: direct.Name, src: from}, msg)
		},
		Deliver: n.bind.Deliver,
		Logger:  n.log,
	}
	if cfg.ListenPort == 0 {
		cfg.ListenPort = DefaultDirectPort
	}
	d, err := direct.New(cfg)
	if err != nil && n.cfg.ListenPort == 0 && errors.Is(err, syscall.EADDRINUSE) {
		n.log.Warn("swarm mode: default UDP port in use, using a random one: static peers must be given this node's actual port (plurenet status shows it)",
			"port", DefaultDirectPort)
		cfg.ListenPort = 0
		d, err = direct.New(cfg)
	}
	if err != nil {
		return fmt.Errorf("direct path: %w", err)
	}
	n.direct = d
	if n.cfg.DHT {
		return n.startDHT()
	}
	return nil
}

// startDiscovery starts the discovery sources; the device is up.
func (n *Node) startDiscovery(ctx context.Context) error {
	sink := discovery.Sink{
		Found: n.found,
		Sealed: func(from netip.AddrPort, msg []byte) {
			n.handleSealed(carrier{name: "lan", src: from, multicast: true}, msg)
		},
	}
	for _, s := range n.swarm.sources {
		if err := s.Start(ctx, sink); err != nil {
			if s == discoverySource(n.swarm.lan) {
				return fmt.Errorf("LAN discovery (turn it off with --lan-discovery off / Config.NoLAN): %w", err)
			}
			return err
		}
	}
	return nil
}

// closeSwarm stops the discovery sources.
func (n *Node) closeSwarm() {
	if n.swarm == nil {
		return
	}
	for _, s := range n.swarm.sources {
		s.Close()
	}
}

// found takes a peer address a source found. A configured key gets a path
// at once (as with plain WireGuard) unless it has a usable one; a new
// address is announced to at once unless the first announce round has yet
// to come.
func (n *Node) found(p discovery.Peer) {
	sw := n.swarm
	sw.mu.Lock()
	old, had := sw.found[p.Label]
	sw.found[p.Label] = p
	announced := sw.announced
	sw.mu.Unlock()
	n.dhtFound(p.Addr)
	if err := n.restoreStatic(p); err != nil {
		n.log.Warn("static peer", "peer", p.Label, "err", err)
	}
	if announced && (!had || old.Addr != p.Addr) {
		if b, ok := n.seal(n.selfAnnounce()); ok {
			n.sendMeshTo(p.Addr, b)
		}
	}
}

// restoreStatic gives a found peer with a configured key its found address
// as the path, unless the peer has a usable path (learned from its own
// announcements, which are what its packets come from).
func (n *Node) restoreStatic(p discovery.Peer) error {
	if p.Key.IsZero() || p.Key == n.pub {
		return nil
	}
	if _, usable, ok := n.direct.StaticAddr(p.Key); ok && usable {
		return nil
	}
	return n.direct.SetStatic(p.Key, p.Addr)
}

// learnPath records where a member whose announcement c carried can be
// reached: the datagram's source, or for LAN multicast the socket its
// candidates name.
func (n *Node) learnPath(c carrier, key nodekey.Public, cands []string) {
	addr := c.src
	if c.multicast {
		var ok bool
		if addr, ok = lan.MemberAddr(c.src, cands); !ok {
			n.log.Debug("LAN announcement without a usable candidate", "peer", key.ShortString(), "from", c.src.String())
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

// selfCandidates are the direct-socket addresses this node announces in
// swarm mode (nil otherwise).
func (n *Node) selfCandidates() []string {
	if n.swarm == nil || n.direct == nil {
		return nil
	}
	return discovery.Candidates(n.direct.LocalAddr())
}

// sendSwarm sends a sealed message (an announcement or a goodbye) through
// the discovery sources, to the addresses they found and to every member
// with a known address. A goodbye (while closing) restores no paths.
func (n *Node) sendSwarm(b []byte, leaving bool) {
	sw := n.swarm
	if sw == nil || n.direct == nil {
		return
	}
	for _, s := range sw.sources {
		if err := s.Announce(b); err != nil {
			n.log.Debug("announcement not sent", "source", fmt.Sprintf("%T", s), "err", err)
		}
	}
	dests := map[netip.AddrPort]bool{}
	sw.mu.Lock()
	sw.announced = true
	var keyed []discovery.Peer
	for _, p := range sw.found {
		dests[p.Addr] = true
		if !p.Key.IsZero() {
			keyed = append(keyed, p)
		}
	}
	sw.mu.Unlock()
	// A configured key with no usable path (never heard, or silent for a
	// while) gets its configured address back.
	if !leaving {
		for _, p := range keyed {
			if err := n.restoreStatic(p); err != nil {
				n.log.Debug("static peer", "peer", p.Label, "err", err)
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
