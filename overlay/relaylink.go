package overlay

import (
	"context"
	"errors"
	"sync"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/transports"
	"github.com/plures/plurenet/transports/relay"
)

// relayLink is one relay connection seen as a transport of the Bind. It
// remembers which keys the relay says are present, so the Bind can skip a
// relay that cannot reach a peer and try the next.
type relayLink struct {
	role   string // "primary" or "fallback"
	url    string
	client *relay.Client

	mu      sync.Mutex
	present map[nodekey.Public]bool
}

var _ transports.Transport = (*relayLink)(nil)

func (l *relayLink) Name() string { return "relay:" + l.role }

func (l *relayLink) Reachable(peer nodekey.Public) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.present[peer]
}

func (l *relayLink) Send(peer nodekey.Public, pkt []byte) error {
	return l.client.Send(peer, pkt)
}

func (l *relayLink) setPresent(k nodekey.Public, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ok {
		l.present[k] = true
	} else {
		delete(l.present, k)
	}
}

// receive runs until ctx ends, handing WireGuard packets to the Bind and
// everything else to the node.
func (n *Node) receive(ctx context.Context, l *relayLink) {
	for {
		m, err := l.client.Recv(ctx)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, relay.ErrClosed) {
				n.log.Warn("relay receive stopped", "relay", l.url, "err", err)
			}
			return
		}
		switch m.Kind {
		case relay.KindUnicast, relay.KindBroadcast:
			switch transports.Classify(m.Payload) {
			case transports.PayloadWireGuard:
				if m.Kind == relay.KindUnicast {
					n.bind.Deliver(m.From, m.Payload)
				}
			case transports.PayloadSealed:
				n.handleSealed(l, m.From, m.Payload)
			default:
				n.log.Debug("dropping unknown relay payload", "relay", l.url, "peer", m.From.ShortString())
			}
		case relay.KindPeerPresent:
			l.setPresent(m.From, true)
			// Tell the newcomer about us now rather than at the next
			// periodic announcement, so it can reach us at once.
			n.announceTo(l, m.From)
		case relay.KindPeerGone:
			l.setPresent(m.From, false)
		}
	}
}
