package overlay

import (
	"errors"
	"net/netip"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/transports/relay"
)

// carrier says what brought a sealed mesh message to the node: everything
// handleSealed needs to know about the way it came.
type carrier struct {
	// name is the transport or source, for logs: "relay:primary",
	// "direct", "lan".
	name string
	// relay is the relay that carried the message, nil otherwise. The
	// relay authenticated the sender's key in its handshake (key), and an
	// answer to the sender goes back over it.
	relay *relay.Client
	// key is the sender as the carrier authenticated it; zero when the
	// carrier did not (UDP, multicast: anyone can send from anywhere), and
	// then the sealed sender key is taken.
	key nodekey.Public
	// src is the datagram's source address; zero over a relay.
	src netip.AddrPort
	// multicast says src is a LAN sender's interface address, not its
	// direct socket (which its candidates name).
	multicast bool
	// answerTo is the sender's direct socket as its announcement gave it
	// (carrierAddr), where an answer goes while the sender has no path.
	answerTo netip.AddrPort
}

// fromRelay is the carrier of a message relay c says came from key.
func fromRelay(c *relay.Client, key nodekey.Public) carrier {
	return carrier{name: c.Name(), relay: c, key: key}
}

// who names the sender as the carrier knows it, for logs.
func (c carrier) who() string {
	if !c.key.IsZero() {
		return c.key.ShortString()
	}
	return c.src.String()
}

// handleSealed opens a sealed mesh message, whatever carried it, and
// applies it: to the membership, to the direct path (a signal, or where an
// announcing member can be reached), and by answering a newcomer.
func (n *Node) handleSealed(c carrier, payload []byte) {
	// Nothing is applied before the device is up (a member joining
	// configures it); meanwhile messages wait where their carrier holds
	// them (a relay connection's reader, the direct socket's bounded mesh
	// queue).
	if !n.waitReady() {
		return
	}
	m, err := n.keys.open(payload, time.Now())
	if err != nil {
		// Only members hold the seal key, so over a relay this is
		// tampering or a bug, on the LAN another mesh or garbage: not
		// worth more than a debug line per packet.
		n.log.Debug("dropping sealed message", "via", c.name, "from", c.who(), "err", err)
		return
	}
	from := c.key
	if from.IsZero() {
		// The seal is the authentication (see swarm.go).
		from = m.From
		if from == n.pub {
			return // our own multicast, looped back
		}
	}
	// In an owned mesh only a certified member enters the membership.
	if m.Kind == mesh.KindAnnounce && from == m.From && !n.admit(from, &m.Announce, time.Now()) {
		return
	}
	// With a relay-authenticated key, Observe refuses a message sealed by
	// another member: a member cannot speak for another.
	ev, err := n.members.Observe(from, m, time.Now())
	if err != nil {
		// The same announcement arrives once per relay and per carriage;
		// the second copy is a replay by design. In swarm mode a replay
		// from elsewhere may still be the member's own copy racing one an
		// outsider sent first: the direct transport checks its source.
		if !errors.Is(err, mesh.ErrReplay) {
			n.log.Info("rejected mesh message", "via", c.name, "from", c.who(), "peer", m.From.ShortString(), "kind", m.Kind, "err", err)
		} else if m.Kind == mesh.KindAnnounce {
			n.heard(c, from, m.Announce.Candidates, false)
			if c.src.IsValid() && !c.multicast {
				// In auto mode the relay's copy of a member's
				// announcement usually wins: its UDP copy still says
				// the DHT-found address answers (status only).
				n.dhtAnswered(c.src, from)
			}
		}
		return
	}
	if c.multicast && n.swarm != nil && n.swarm.lan != nil {
		// A member's sending socket: its next messages get a member's
		// budget in the group reader.
		n.swarm.lan.Vouch(c.src)
	}
	switch m.Kind {
	case mesh.KindSignal:
		switch {
		case n.direct == nil:
		case c.relay != nil:
			if err := n.direct.HandleSignal(from, m.Signal); err != nil {
				n.log.Debug("dropping direct-path signal", "peer", from.ShortString(), "err", err)
			}
		case c.src.IsValid() && !c.multicast:
			// Swarm mode: a path check (no ICE without a relay).
			if err := n.direct.HandlePathSignal(from, c.src, m.Signal); err != nil {
				n.log.Debug("dropping path check", "peer", from.ShortString(), "from", c.src.String(), "err", err)
			}
		}
		return
	case mesh.KindDocument:
		n.receiveDocument(c, m.Document)
		return
	case mesh.KindForward:
		n.handleForward(c, from, m.Forward)
		return
	case mesh.KindAnnounce:
		if n.recheckMember(ev.Member, time.Now()) {
			return // revoked or expired since admit: removed again
		}
		n.heard(c, from, m.Announce.Candidates, true)
		c.answerTo, _ = n.carrierAddr(c, m.Announce.Candidates)
		if c.src.IsValid() && n.heardDirect(c, from, payload) {
			// After the membership event below (a newcomer is answered
			// first).
			defer n.introduce(from)
		}
		n.heardFrom(from)
		n.compareDocuments(c, from, m.Announce.Owned)
	}
	switch ev.Kind {
	case mesh.EventJoined:
		n.log.Info("member joined", "peer", from.ShortString(), "name", m.Announce.Name, "via", c.name)
		// WireGuard learns the member before the member hears our answer,
		// so that a handshake it starts on that answer is not dropped
		// here as coming from a stranger (see firstcontact.go).
		n.syncPeers()
		// The newcomer may not have heard us yet (it joined after our
		// last periodic announcement).
		n.answer(c, from)
	case mesh.EventUpdated, mesh.EventLeft:
		if ev.Kind == mesh.EventLeft {
			n.log.Info("member left", "peer", from.ShortString())
		}
		n.syncPeers()
	}
}

// answer sends this node's announcement to a member that just joined, the
// way its message came: over the same relay, or to its direct path (while
// it has none, to where its announcement came from).
func (n *Node) answer(c carrier, peer nodekey.Public) {
	n.sendSealedTo(c, peer, n.selfAnnounce())
}

// sendSealedTo sends one member a sealed message the way its message came.
func (n *Node) sendSealedTo(c carrier, peer nodekey.Public, m mesh.Message) {
	b, ok := n.seal(m)
	if !ok {
		return
	}
	if c.relay != nil {
		if err := c.relay.Send(peer, b); err != nil {
			n.log.Debug("sealed message not sent", "relay", c.relay.URL(), "peer", peer.ShortString(), "kind", m.Kind, "err", err)
		}
		return
	}
	if n.direct == nil {
		return
	}
	addr, _, ok := n.direct.StaticAddr(peer)
	if !ok {
		// No path yet (it waits for a check): to where the member's
		// message came from. At worst (a copy replayed from elsewhere and
		// accepted as new) one message goes there per such copy.
		addr, ok = c.answerTo, c.answerTo.IsValid()
	}
	if ok {
		n.sendMeshTo(addr, b)
	}
}
