package relay

import (
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/transports"
)

// The client as a transports.Transport. WireGuard messages take the
// shortest way up: the connection's reader classifies each payload and
// calls Config.Deliver (the Bind's) itself, so a received packet changes
// goroutine once, from the reader to the device's receive routine through
// the Bind's inbox. Sealed mesh messages and presence changes, which the
// node acts on at some cost (opening a seal, reconfiguring WireGuard), go
// through the bounded queue Recv reads and one dispatch goroutine, so they
// never hold up the reader and the data behind them.
//
// Presence is tracked once, in the client's presence set: Reachable reads
// it, and OnPeer reports its changes.

var _ transports.Transport = (*Client)(nil)

// hooks reports whether the client hands what it receives to Config hooks
// rather than to Recv.
func (c *Client) hooks() bool {
	return c.cfg.Deliver != nil || c.cfg.OnSealed != nil || c.cfg.OnPeer != nil
}

// Name is Config.Name: the transport's name in the Bind's path names.
func (c *Client) Name() string { return c.cfg.Name }

// Reachable reports whether the relay says peer is in the rendezvous. The
// Bind skips a relay that cannot reach a peer and tries the next.
func (c *Client) Reachable(peer nodekey.Public) bool { return c.presence.has(peer) }

// received handles a data frame's payload on the reader goroutine.
func (c *Client) received(kind Kind, from nodekey.Public, payload []byte) {
	c.stats.recvFrames.Add(1)
	c.stats.recvBytes.Add(uint64(len(payload)))
	if !c.hooks() {
		c.queue(kind, from, payload)
		return
	}
	switch transports.Classify(payload) {
	case transports.PayloadWireGuard:
		if kind == KindUnicast && c.cfg.Deliver != nil {
			c.cfg.Deliver(from, payload)
			return
		}
	case transports.PayloadSealed:
		if c.cfg.OnSealed != nil {
			c.queue(kind, from, payload)
			return
		}
	}
	c.stats.recvIgnored.Add(1)
	c.log.Debug("relay: dropping payload no hook takes", "relay", c.cfg.URL, "peer", from.ShortString(), "kind", kind, "bytes", len(payload))
}

// dispatch hands sealed messages and presence changes to the hooks until
// Close: the consumer of Recv's queue for a client with hooks.
func (c *Client) dispatch() {
	defer c.wg.Done()
	for {
		m, err := c.next(c.ctx)
		if err != nil {
			return // closed
		}
		switch m.Kind {
		case KindUnicast, KindBroadcast:
			c.cfg.OnSealed(m.From, m.Payload)
		case KindPeerPresent, KindPeerGone:
			if c.cfg.OnPeer != nil {
				c.cfg.OnPeer(m.From, m.Kind == KindPeerPresent)
			}
		}
	}
}
