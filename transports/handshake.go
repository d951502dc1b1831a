package transports

import (
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/device"

	"github.com/plures/plurenet/internal/nodekey"
)

// First contact. wireguard-go retries a handshake message that got no
// answer only after device.RekeyTimeout (5 s), and refuses to create a new
// initiation sooner. When a path appears just after a handshake message
// left on another one (the relay, before ICE nominated; a direct pair the
// peer had not accepted yet), that message may be lost and the flow waits
// out the whole 5 s. So the Bind keeps the last handshake message it sent
// to each peer for that long, and sends the very same bytes again when
// the owner reports a new path to the peer (ResendHandshake).
//
// Sending the same bytes again is what a duplicating network does, and
// WireGuard is built for it: a duplicate initiation carries the same
// TAI64N timestamp, which the responder rejects as a replay if it saw the
// first copy; a duplicate response is ignored once the initiator consumed
// the first. Not when two copies of an initiation arrive together, though:
// wireguard-go's replay check races with itself, so the receiving Bind
// holds such a copy back until the device is done with the first
// (dupinit.go). Nothing new is
// signed or derived here, so the Bind still never touches WireGuard's
// state.

// handshakeKeep is how long a handshake message is kept for resending:
// after RekeyTimeout wireguard-go sends a fresh one itself.
const handshakeKeep = device.RekeyTimeout

// handshakeResends bounds how often one message is sent again, so a path
// that flaps cannot turn one handshake into a flood.
const handshakeResends = 4

// WireGuard handshake messages, by type and size (the WireGuard paper,
// section 5.4): an initiation is 148 bytes, a response 92.
const (
	wgInitiation     = 1
	wgResponse       = 2
	wgInitiationSize = device.MessageInitiationSize
	wgResponseSize   = device.MessageResponseSize
)

// pendingHandshake is the last handshake message sent to one peer.
type pendingHandshake struct {
	msg     [wgInitiationSize]byte
	n       int
	sent    time.Time
	resends int
}

// handshakes holds each peer's pendingHandshake.
type handshakes struct {
	mu sync.Mutex
	m  map[nodekey.Public]*pendingHandshake
}

// isHandshake reports whether a packet is a WireGuard initiation or
// response. wireguard-go sends each alone, so a batch of more than one
// packet never holds one and costs nothing to check.
func isHandshake(bufs [][]byte) bool {
	if len(bufs) != 1 || Classify(bufs[0]) != PayloadWireGuard {
		return false
	}
	p := bufs[0]
	return p[0] == wgInitiation && len(p) == wgInitiationSize || p[0] == wgResponse && len(p) == wgResponseSize
}

// remember keeps a copy of the handshake message msg sent to peer.
func (h *handshakes) remember(peer nodekey.Public, msg []byte, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = make(map[nodekey.Public]*pendingHandshake)
	}
	for k, p := range h.m { // only a few at a time: handshakes are rare
		if now.Sub(p.sent) > handshakeKeep {
			delete(h.m, k)
		}
	}
	p := &pendingHandshake{sent: now}
	p.n = copy(p.msg[:], msg)
	h.m[peer] = p
}

// take returns a copy of the message to resend to peer, if one is young
// enough and has resends left.
func (h *handshakes) take(peer nodekey.Public, now time.Time) ([]byte, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.m[peer]
	if p == nil || now.Sub(p.sent) > handshakeKeep || p.resends >= handshakeResends {
		return nil, false
	}
	p.resends++
	return append([]byte(nil), p.msg[:p.n]...), true
}

func (h *handshakes) forget(peer nodekey.Public) {
	h.mu.Lock()
	delete(h.m, peer)
	h.mu.Unlock()
}

// ResendHandshake sends the last WireGuard handshake message sent to peer
// again, if it left less than RekeyTimeout ago: call it when a path to the
// peer appears or changes, so a message lost on the old path (or sent
// before the peer accepted the new one) is not waited out. It reports
// whether a message was sent.
func (b *Bind) ResendHandshake(peer nodekey.Public) bool {
	msg, ok := b.hs.take(peer, time.Now())
	if !ok {
		return false
	}
	if err := b.send([][]byte{msg}, Endpoint{Key: peer}); err != nil {
		b.log.Debug("resending handshake", "peer", peer.ShortString(), "err", err)
		return false
	}
	b.log.Debug("resent handshake on a new path", "peer", peer.ShortString())
	return true
}
