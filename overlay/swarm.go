package overlay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/plures/plurenet/discovery"
	"github.com/plures/plurenet/discovery/lan"
	"github.com/plures/plurenet/discovery/static"
	"github.com/plures/plurenet/internal/mesh"
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
//   - Where an authenticated announcement came from (the datagram's
//     source; for the LAN group, the socket its Candidates name:
//     lan.MemberAddr) is told to the direct transport (direct.Heard). A
//     fresh one from the member's path confirms it; one from another
//     address, fresh or a replay, makes the transport check that address
//     (a probe the member must answer from there) before the path moves
//     (transports/direct/pathcheck.go). The signature proves who sent a
//     message, not from where: anyone who saw a member's announcement (a
//     LAN outsider sees every multicast one) can send a copy from another
//     address, and the first copy wins the replay guard.
//   - A member heard of for the first time is answered at once, by unicast
//     to where its message came from, so both sides know each other, and
//     have checked each other's address, within a few round trips.
//
// What reaches the node at all is limited per source before any
// cryptography: members' addresses have budgets of their own, so a flood
// from other (spoofed) sources cannot crowd out their announcements
// (transports/direct/mesh.go, discovery/lan). WireGuard still protects
// every packet; a path kept on a wrong address is denial of service.

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

// swarmMode is the discovery state of a node: all of swarm mode's, or in
// auto mode with the DHT the DHT alone (autodht.go).
type swarmMode struct {
	sources []discoverySource
	lan     *lan.Source // also in sources; nil with NoLAN
	dht     *dhtState   // its source also in sources; nil without Config.DHT (swarmdht.go)
	fwd     *forwarder  // forwarded announcements (forward.go)
	retries retries     // found addresses not yet answered (swarmretry.go)

	mu    sync.Mutex
	found map[string]discovery.Peer // by Label: addresses to announce to
	// announced is set by the first announce round: a peer found after
	// it is sent an announcement at once, one found before was in it.
	announced bool

	// relaysUp says a relay was connected at the last autoDHTTick (auto
	// mode); owned by the maintain goroutine.
	relaysUp bool
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
		OnMesh:          n.onDirectMesh,
		SealSignal:      n.sealSignal,
		Deliver:         n.bind.Deliver,
		Logger:          n.log,
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

// onDirectMesh takes a sealed mesh message from the direct socket.
func (n *Node) onDirectMesh(from netip.AddrPort, msg []byte) {
	n.handleSealed(carrier{name: direct.Name, src: from}, msg)
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
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.retryFound(ctx)
	}()
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
	if !had || old.Addr != p.Addr {
		sw.retries.add(p.Addr, time.Now())
	}
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

// heard tells the direct transport where an authenticated message from a
// member came from (fresh: accepted as new, not a replay). The transport
// confirms the member's path with it, or checks the address before moving
// the path there (transports/direct/pathcheck.go): a replayed copy sent
// from another address must not move a path.
func (n *Node) heard(c carrier, key nodekey.Public, cands []string, fresh bool) {
	addr, ok := n.carrierAddr(c, cands)
	if !ok {
		return
	}
	if n.swarm != nil {
		n.swarm.retries.answered(addr)
	}
	if n.cfg.Transport == TransportAuto && n.relayReaches(key) {
		return // relay and ICE have the member (autodht.go)
	}
	if c.multicast {
		// A usable path on the member's port is the address its packets
		// come from (its unicast source): the group's view of it (the
		// interface it multicast on) is not checked against it. A port
		// that changed means the member restarted.
		if cur, usable, ok := n.direct.StaticAddr(key); ok && usable && cur != addr && cur.Port() == addr.Port() {
			return
		}
	}
	if fresh && n.swarm != nil && n.unconfirmedAt(key, addr) {
		n.swarm.retries.addCheck(key, addr, time.Now())
	}
	n.direct.Heard(key, addr, fresh)
}

// carrierAddr is where a member whose message c carried can be reached:
// the datagram's source, or for LAN multicast the socket its candidates
// name. ok is false over a relay, or for an announcement with no usable
// candidate.
func (n *Node) carrierAddr(c carrier, cands []string) (netip.AddrPort, bool) {
	if !c.src.IsValid() || c.relay != nil || n.direct == nil {
		return netip.AddrPort{}, false
	}
	if !c.multicast {
		return c.src, true
	}
	addr, ok := lan.MemberAddr(c.src, cands)
	if !ok {
		n.log.Debug("LAN announcement without a usable candidate", "from", c.src.String())
	}
	return addr, ok
}

// sealSignal seals a path-check signal of the direct transport.
func (n *Node) sealSignal(msg []byte) ([]byte, error) {
	b, ok := n.seal(mesh.Message{Kind: mesh.KindSignal, From: n.pub, Signal: msg})
	if !ok {
		return nil, errors.New("sealing a path check failed")
	}
	return b, nil
}

// selfCandidates are the direct-socket addresses this node announces in
// swarm mode (nil otherwise: they serve LAN discovery, and in auto mode
// ICE offers its own candidates).
func (n *Node) selfCandidates() []string {
	if n.cfg.Transport != TransportSwarm || n.direct == nil {
		return nil
	}
	return discovery.Candidates(n.direct.LocalAddr())
}

// sendSwarm sends a sealed message (an announcement or a goodbye) through
// the discovery sources, to the addresses they found and to every member
// with a known address (in auto mode, every member no relay reaches:
// memberUDPAddr). A goodbye (while closing) restores no paths.
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
		if addr, ok := n.memberUDPAddr(m.Key); ok {
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
