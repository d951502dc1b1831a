package overlay

import (
	"net/netip"

	"github.com/plures/plurenet/internal/nodekey"
)

// First contact: a member's first packets must not wait out wireguard-go's
// 5 s handshake retry. A handshake message is lost when it is sent before
// the peer can take it: over a relay before the peer's WireGuard knows
// this member (it is still opening our announcement), or over a direct
// pair the peer has not selected yet. Three things close those windows:
//
//   - a member's WireGuard peer is configured before this node answers
//     its announcement, and WaitMember returns only once it is, so that
//     neither a handshake nor a dial races the configuration;
//   - the Bind keeps the last handshake message it sent to each peer for
//     5 s and sends it again when the path to the peer changes (ICE
//     validates or moves the direct path, or it stops carrying and the
//     relay takes over) or when the peer is heard from (an announcement:
//     the peer knows this member by then): pathChanged and heardFrom;
//   - a freshly validated direct path is tentative, and packets go over
//     the relay too until the peer is seen using it (transports.TentativeSender).
//
// TestFirstContact measures the time from a join to the first ping reply.

// pathChanged is the direct transport's OnPathChange: the direct path to
// peer appeared, moved or stopped carrying.
func (n *Node) pathChanged(peer nodekey.Public) {
	n.bind.ResendHandshake(peer)
}

// heardFrom is called for every authenticated announcement from a member:
// it knows this node by now, so a handshake message it may have dropped as
// a stranger's is worth sending again.
func (n *Node) heardFrom(peer nodekey.Public) {
	n.bind.ResendHandshake(peer)
}

// configuredMember reports whether ip is the overlay address of a member
// the WireGuard device already has as a peer.
func (n *Node) configuredMember(ip netip.Addr) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, pc := range n.configured {
		if pc.v4 == ip || pc.v6 == ip {
			return true
		}
	}
	return false
}
