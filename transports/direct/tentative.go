package direct

import (
	"net/netip"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/transports"
)

// A path ICE has just validated here may not be validated at the peer yet:
// the controlling side selects a pair when its nomination is answered, the
// controlled side when it has both received the nomination and seen its
// own check on the pair succeed, which can be a check interval and a round
// trip later. WireGuard packets that arrive before the peer maps the
// address are dropped there as coming from an unknown source, and the
// first of them is often the handshake or the first data packet of a new
// flow. So a fresh path is tentative: the Bind sends over it and over the
// next transport (the relay) until the peer is seen sending WireGuard on
// it, or tentativeWindow has passed. The receiving WireGuard drops
// whichever copy arrives second (replay protection), so nothing is
// delivered twice.

// tentativeWindow bounds the doubled traffic after a path comes up: far
// longer than the peer's selection lags on any path worth taking (a few
// round trips), short enough that an idle peer (which sends nothing to
// confirm with) costs a second of duplicates at most twice as long.
const tentativeWindow = 2 * time.Second

var _ transports.TentativeSender = (*Transport)(nil)

// Tentative implements transports.TentativeSender: it reports whether the
// peer's direct path is an ICE path validated here less than
// tentativeWindow ago on which no WireGuard packet from the peer has
// arrived yet.
func (t *Transport) Tentative(peer nodekey.Public) bool {
	p := t.peer(peer)
	if p == nil {
		return false
	}
	now := t.now()
	dp := p.livePath(now)
	if dp == nil || dp.static || dp.peerUses.Load() {
		return false
	}
	return now-dp.validated < int64(tentativeWindow)
}

// touchWireGuard records that a WireGuard packet arrived from addr: the
// peer sends on this path, so it has validated it too.
func (p *peer) touchWireGuard(addr netip.AddrPort, now int64) {
	p.touch(addr, now)
	if dp := p.path.Load(); dp != nil && dp.addr == addr && !dp.peerUses.Load() {
		dp.peerUses.Store(true)
	}
}
