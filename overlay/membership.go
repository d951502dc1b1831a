package overlay

import (
	"errors"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
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
			Candidates: n.selfCandidates(), // direct mode only
		},
	}
}

func (n *Node) seal(m mesh.Message) ([]byte, bool) {
	b, err := mesh.Seal(n.keys, n.priv, m, n.stamp.Next(time.Now()))
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
	for _, l := range n.links {
		if err := l.client.Broadcast(b); err != nil {
			n.log.Debug("broadcast not sent", "relay", l.url, "kind", m.Kind, "err", err)
		}
	}
	n.sendDirectMode(b, m.Kind == mesh.KindLeave)
}

// announceTo sends this node's announcement to one peer through l.
func (n *Node) announceTo(l *relayLink, peer nodekey.Public) {
	b, ok := n.seal(n.selfAnnounce())
	if !ok {
		return
	}
	if err := l.client.Send(peer, b); err != nil {
		n.log.Debug("announcement not sent", "relay", l.url, "peer", peer.ShortString(), "err", err)
	}
}

// handleSealed opens a sealed mesh message that the relay l says came from
// from, and applies it to the membership.
func (n *Node) handleSealed(l *relayLink, from nodekey.Public, payload []byte) {
	m, err := mesh.Open(n.keys, payload)
	if err != nil {
		// Only members hold the seal key, so this is tampering or a bug;
		// it is not worth more than a debug line per packet.
		n.log.Debug("dropping sealed message", "relay", l.url, "peer", from.ShortString(), "err", err)
		return
	}
	ev, err := n.members.Observe(from, m, time.Now())
	if err != nil {
		// The same announcement arrives once per relay; the second copy is
		// a replay by design.
		if errors.Is(err, mesh.ErrReplay) {
			return
		}
		n.log.Info("rejected mesh message", "relay", l.url, "peer", from.ShortString(), "kind", m.Kind, "err", err)
		return
	}
	if m.Kind == mesh.KindSignal {
		if n.direct != nil {
			if err := n.direct.HandleSignal(from, m.Signal); err != nil {
				n.log.Debug("dropping direct-path signal", "peer", from.ShortString(), "err", err)
			}
		}
		return
	}
	switch ev.Kind {
	case mesh.EventJoined:
		n.log.Info("member joined", "peer", from.ShortString(), "name", m.Announce.Name)
		// The newcomer may not have heard us yet (it joined after our
		// last periodic announcement).
		n.announceTo(l, from)
		n.syncPeers()
	case mesh.EventUpdated, mesh.EventLeft:
		if ev.Kind == mesh.EventLeft {
			n.log.Info("member left", "peer", from.ShortString())
		}
		n.syncPeers()
	}
}
