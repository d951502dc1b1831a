package direct

import (
	"fmt"
	"time"
)

// stunCacheTTL is how long one STUN answer (this node's public address)
// serves new ICE sessions. Long enough to share one answer among the
// sessions a join burst starts together; short enough (netmon's debounce)
// that a session started after a move never gets the address from before
// it, which would leave the move unhealed until the cache expired.
const stunCacheTTL = 250 * time.Millisecond

// Restart is what a node does when its network changed under it (package
// netmon): an address came or went, the default route moved, or the host
// woke from sleep. Every candidate gathered before may be stale, and so
// may every NAT mapping, so it
//
//   - re-reads the interfaces (pion's host candidates and this host's own
//     addresses, candidates.go, come from that list);
//   - starts a fresh ICE session with every peer at once, skipping any
//     backoff: the controlling side gathers anew (host candidates, and
//     server-reflexive ones from a fresh STUN round) and offers; the
//     controlled side drops its session and asks for one, which the peer
//     starts at once (minSessionInterval permitting);
//   - reports an error if the socket's own bound address is gone, which no
//     restart can heal (the wildcard socket the overlay uses survives any
//     move).
//
// The WireGuard sessions are not touched: the Bind carries their packets
// on a relay while the new direct path forms, so connections survive.
// Static paths (swarm mode) are not ICE's: the overlay re-announces, and
// peers learn the new address from the announcement's source.
func (t *Transport) Restart(reason string) error {
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if err := t.inet.UpdateInterfaces(); err != nil {
		return fmt.Errorf("direct: re-reading interfaces after %s: %w", reason, err)
	}
	own := ownAddrs(t.inet)
	t.ownAddrs.Store(&own)
	if a := t.local.Addr(); !a.IsUnspecified() && !a.IsLoopback() && !own[a.Unmap()] {
		return fmt.Errorf("direct: the socket's address %s is gone after %s; "+
			"restart the node, or do not set a listen address so the socket binds every address", a, reason)
	}
	n := 0
	for _, p := range *t.peers.Load() {
		select {
		case p.restartc <- struct{}{}:
		default: // a restart is already pending
		}
		n++
	}
	t.log.Info("direct: network changed; restarting ICE with every peer", "reason", reason, "peers", n, "addrs", len(own))
	return nil
}

// restart runs on the peer's state machine: a fresh attempt now, with the
// backoff forgotten (the failures it counted were on the old network).
func (p *peer) restart(now time.Time) {
	if p.t.cfg.DisableICE {
		return
	}
	p.attempts = 0
	if p.controlling {
		p.startSession(now, p.pendingMin)
		return
	}
	p.endSession()
	p.attempt(now)
}
