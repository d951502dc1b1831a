package overlay

import (
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/transports/relay"
)

// selfAnnounce is the announcement this node sends.
func (n *Node) selfAnnounce() mesh.Message {
	n.mu.Lock()
	v4 := n.selfV4
	n.mu.Unlock()
	return mesh.Message{
		Kind: mesh.KindAnnounce,
		From: n.pub,
		Announce: mesh.Announce{
			V4:         v4,
			V6:         n.v6,
			PinnedV4:   n.cfg.PinnedV4.IsValid(),
			Name:       n.cfg.Name,
			Candidates: n.selfCandidates(), // swarm mode only
			Owned:      n.ownedFields(),    // owned mesh only
		},
	}
}

func (n *Node) seal(m mesh.Message) ([]byte, bool) {
	b, err := mesh.Seal(n.keys.current(), n.priv, m, n.stamp.Next(time.Now()))
	if err != nil {
		n.log.Error("sealing mesh message", "kind", m.Kind, "err", err)
		return nil, false
	}
	return b, true
}

// announce broadcasts this node's announcement on every relay.
func (n *Node) announce() { n.broadcastSealed(n.selfAnnounce()) }

func (n *Node) broadcastSealed(m mesh.Message) {
	b, ok := n.seal(m)
	if !ok {
		return
	}
	for _, c := range n.relays {
		if err := c.Broadcast(b); err != nil {
			n.log.Debug("broadcast not sent", "relay", c.URL(), "kind", m.Kind, "err", err)
		}
	}
	n.sendSwarm(b, m.Kind == mesh.KindLeave)
}

// announceTo sends this node's announcement to one peer through relay c.
func (n *Node) announceTo(c *relay.Client, peer nodekey.Public) {
	n.sendSealedTo(carrier{relay: c}, peer, n.selfAnnounce())
}
