package overlay

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/transports/direct"
)

// startDirect creates the direct UDP transport. Its ICE signaling travels as
// sealed mesh messages over the relays.
func (n *Node) startDirect() error {
	d, err := direct.New(direct.Config{
		PrivateKey:      n.priv,
		ListenPort:      n.cfg.ListenPort,
		ListenAddr:      n.cfg.ListenAddr,
		STUNServers:     n.cfg.STUNServers,
		ExcludePrefixes: n.meshPrefixes(),
		Signal:          n.sendSignal,
		Deliver:         n.bind.Deliver,
		OnPathChange:    n.pathChanged,
		Logger:          n.log,
	})
	if err != nil {
		return fmt.Errorf("direct path: %w", err)
	}
	n.direct = d
	return nil
}

// meshPrefixes are the overlay's own prefixes. The direct path must never
// run over them: with a kernel TUN they are local interface addresses.
func (n *Node) meshPrefixes() []netip.Prefix {
	return []netip.Prefix{n.cfg.V4Prefix, mesh.ULAPrefix(n.cfg.TopicID)}
}

// errNoRelayToPeer is returned when no relay connection reaches a peer.
var errNoRelayToPeer = errors.New("no relay reaches the peer")

// sendSignal seals an ICE signal for peer and sends it over the first
// relay that reaches it.
func (n *Node) sendSignal(peer nodekey.Public, msg []byte) error {
	b, ok := n.seal(mesh.Message{Kind: mesh.KindSignal, From: n.pub, Signal: msg})
	if !ok {
		return errors.New("sealing signal failed")
	}
	for _, c := range n.relays {
		if c.Reachable(peer) {
			return c.Send(peer, b)
		}
	}
	return errNoRelayToPeer
}
