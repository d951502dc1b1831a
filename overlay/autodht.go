package overlay

import (
	"net/netip"

	"github.com/plures/plurenet/discovery"
	"github.com/plures/plurenet/internal/nodekey"
)

// The Mainline DHT in auto mode (--transport auto --dht on): members keep
// meeting while no relay reaches them. It is swarm mode's DHT machinery,
// reused as it is, beside the relays and ICE:
//
//   - The DHT node runs on the direct socket (the one ICE uses, so the
//     mapping the DHT learns and announces with implied_port is the one
//     WireGuard and ICE use), under the same rotating info-hash
//     (swarmdht.go). The node keeps a swarmMode whose only source is the
//     DHT; the socket takes sealed mesh messages and path checks as in
//     swarm mode (transports/direct/mesh.go, pathcheck.go).
//   - Each announce round the announcement goes over the relays as
//     always, and as UDP to every address the DHT found and to every
//     member no connected relay reaches, at its direct path's address
//     (sendSwarm). With the relays up this is a few redundant datagrams;
//     with every relay down it is what keeps members from timing out, and
//     the sealed hello that lets a newcomer and a restarted member meet
//     the others (both sides send: a simultaneous open).
//   - Where a member's authenticated message came from becomes its path
//     only after a path check (challenge-response from that address),
//     and only while no connected relay reaches the member (heard). That
//     path is a static one of the direct transport: used when ICE has no
//     live path of its own (ICE's is always preferred), dropped as soon
//     as a connected relay reaches the member again (autoDHTTick, every
//     maintainInterval). From then on the member is on the relay,
//     and ICE upgrades it as usual: the two never hold one member at once
//     for long, and never move each other's path.
//   - Forwarded announcements (forward.go) work as in swarm mode, so one
//     DHT hit meets every member reachable directly.
//
// Who can reach what is swarm mode's (docs/security.md): the DHT learns
// the member's public IP and port, and the socket takes sealed datagrams
// from anyone, bounded before any cryptography.

// startAutoDHT starts the DHT discovery of auto mode on the direct socket;
// it starts finding in startDiscovery, once the device is up.
func (n *Node) startAutoDHT() error {
	n.swarm = &swarmMode{found: make(map[string]discovery.Peer), fwd: newForwarder()}
	return n.startDHT()
}

// relayReaches reports whether a connected relay has confirmed peer in its
// rendezvous (relay.Client.Present). A relay's presence set outlives its
// connection, and after a reconnect it still holds keys the relay has not
// confirmed: a member that is not back on the relay yet must keep its
// DHT-found path.
func (n *Node) relayReaches(peer nodekey.Public) bool {
	for _, c := range n.relays {
		if c.Present(peer) {
			return true
		}
	}
	return false
}

// autoDHTTick runs every maintainInterval in auto mode with the DHT (on
// the maintain goroutine, which owns swarmMode.relaysUp): when the last
// relay connection goes, the DHT looks members up at once (a member
// joining or restarting meanwhile can be met only once this node has
// looked it up: its hellos alone do not get through this node's NAT); and
// every member a connected relay reaches again loses its DHT-found path.
func (n *Node) autoDHTTick() {
	if n.swarm == nil || n.cfg.Transport != TransportAuto {
		return
	}
	up := false
	for _, c := range n.relays {
		up = up || c.Connected()
	}
	if n.swarm.relaysUp && !up {
		n.log.Info("every relay is down: members keep meeting through the DHT")
		n.swarm.dht.src.Soon()
	}
	n.swarm.relaysUp = up
	n.dropRelayedStatic()
}

// dropRelayedStatic drops the static path of every member a connected
// relay reaches again: relay and ICE take over.
func (n *Node) dropRelayedStatic() {
	for _, m := range n.members.List() {
		if _, _, ok := n.direct.StaticAddr(m.Key); ok && n.relayReaches(m.Key) {
			n.direct.ClearStatic(m.Key)
			n.log.Debug("a relay reaches the member again: its DHT-found path is dropped", "peer", m.Key.ShortString())
		}
	}
}

// memberUDPAddr is where an announcement to a member goes over UDP: its
// static address; in auto mode, only while no connected relay reaches it,
// and then its ICE path's address if it has no static one.
func (n *Node) memberUDPAddr(key nodekey.Public) (netip.AddrPort, bool) {
	if n.cfg.Transport != TransportAuto {
		addr, _, ok := n.direct.StaticAddr(key)
		return addr, ok
	}
	if n.relayReaches(key) {
		return netip.AddrPort{}, false
	}
	if addr, _, ok := n.direct.StaticAddr(key); ok {
		return addr, true
	}
	if pi, ok := n.direct.PathInfo(key); ok && pi.Remote.IsValid() {
		return pi.Remote, true
	}
	return netip.AddrPort{}, false
}
