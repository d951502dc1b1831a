package transports

import "github.com/plures/plurenet/internal/nodekey"

// TentativeSender is implemented by a transport whose path to a peer may
// be usable on this side before the peer accepts packets on it (the direct
// path right after ICE selects a pair: see transports/direct's
// tentative.go). While Tentative reports true, the Bind sends each batch
// for the peer over the next transport that reaches it as well. WireGuard
// makes the copy harmless: the receiver drops the second copy of a data
// packet (its replay window) and of a handshake message (a replayed
// initiation's timestamp, a response for a handshake already done; the
// receiving Bind holds back a copy of an initiation that arrives with the
// first, which wireguard-go's replay check can miss: dupinit.go).
type TentativeSender interface {
	Tentative(peer nodekey.Public) bool
}

// sendCopy sends bufs to peer over the first of ts that reaches it. Its
// failure is not the sender's: the packets already left on the preferred
// path.
func (b *Bind) sendCopy(ts []Transport, peer nodekey.Public, bufs [][]byte) {
	for _, t := range ts {
		if !t.Reachable(peer) {
			continue
		}
		if b.sendOn(t, peer, bufs) == nil {
			b.copies.Add(uint64(len(bufs)))
		}
		return
	}
}
