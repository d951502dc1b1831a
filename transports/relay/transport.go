package relay

import (
	"bytes"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/transports"
)

// The client as a transports.Transport. WireGuard messages take the
// shortest way up: the connection's reader classifies each payload and
// calls Config.Deliver (the Bind's) itself, so a received packet changes
// goroutine once, from the reader to the device's receive routine through
// the Bind's inbox.
//
// Sealed mesh messages go to Config.OnSealed from the same reader, in order
// with the WireGuard messages around them. Order matters: a member that
// joins announces itself and then starts its WireGuard handshake, and the
// node must have made it a WireGuard peer (on its announcement) before the
// handshake reaches the device, or the device drops it as from an unknown
// key and WireGuard tries again only after 5 s. Sealed messages are rare
// (one announcement per member per 15 s), so the reader seldom waits on
// the node.
//
// Presence is tracked once, in the client's presence set: Reachable reads
// it, and OnPeer reports its changes from the client's dispatch goroutine
// (changes also come from the connection manager, when a reconnect
// settles).

var _ transports.Transport = (*Client)(nil)

// Inbox takes received WireGuard messages together with the buffers they
// were read into (transports.Bind).
type Inbox interface {
	// DeliverBuffer takes buf, from transports.InboundBuffer; the message
	// is (*buf)[off:]. It must not block.
	DeliverBuffer(from nodekey.Public, buf *[]byte, off int)
}

// hooks reports whether the client hands what it receives to Config hooks
// rather than to Recv.
func (c *Client) hooks() bool {
	return c.cfg.Deliver != nil || c.cfg.Inbox != nil || c.cfg.OnSealed != nil || c.cfg.OnPeer != nil
}

// Name is Config.Name: the transport's name in the Bind's path names.
func (c *Client) Name() string { return c.cfg.Name }

// Reachable reports whether the relay says peer is in the rendezvous. The
// Bind skips a relay that cannot reach a peer and tries the next.
func (c *Client) Reachable(peer nodekey.Public) bool { return c.presence.has(peer) }

// Present reports whether the client is connected and the relay said, on
// this connection, that peer is in the rendezvous. Reachable is broader on
// purpose (a reconnect keeps the keys it has not confirmed yet, and a
// relay that is down keeps them all, so the Bind tries the relay and moves
// on at once); Present is for a caller that must know the relay carries to
// peer now.
func (c *Client) Present(peer nodekey.Public) bool {
	return c.Connected() && c.presence.confirmed(peer)
}

// received handles a data frame's payload on the reader goroutine. frame
// is the payload's buffer when the reader may give it away (nil when not);
// received reports whether it did, so that the reader takes a new one.
func (c *Client) received(kind Kind, from nodekey.Public, payload []byte, frame *[]byte) (kept bool) {
	c.stats.recvFrames.Add(1)
	c.stats.recvBytes.Add(uint64(len(payload)))
	if !c.hooks() {
		c.queue(kind, from, payload)
		return false
	}
	switch transports.Classify(payload) {
	case transports.PayloadWireGuard:
		if kind != KindUnicast {
			break
		}
		if c.cfg.Inbox != nil && frame != nil {
			c.cfg.Inbox.DeliverBuffer(from, frame, len(*frame)-len(payload))
			return true
		}
		if c.cfg.Inbox != nil {
			c.cfg.Inbox.DeliverBuffer(from, transports.InboundCopy(payload), 0)
			return false
		}
		if c.cfg.Deliver != nil {
			c.cfg.Deliver(from, payload)
			return false
		}
	case transports.PayloadSealed:
		if c.cfg.OnSealed != nil {
			c.cfg.OnSealed(from, bytes.Clone(payload))
			return false
		}
	}
	c.stats.recvIgnored.Add(1)
	c.log.Debug("relay: dropping payload no hook takes", "relay", c.cfg.URL, "peer", from.ShortString(), "kind", kind, "bytes", len(payload))
	return false
}

// dispatch hands presence changes to OnPeer until Close, in order and one
// at a time.
func (c *Client) dispatch() {
	defer c.wg.Done()
	for {
		if m, ok := c.presence.next(); ok {
			if c.cfg.OnPeer != nil {
				c.cfg.OnPeer(m.From, m.Kind == KindPeerPresent)
			}
			continue
		}
		select {
		case <-c.presence.notify:
		case <-c.ctx.Done():
			return
		}
	}
}
