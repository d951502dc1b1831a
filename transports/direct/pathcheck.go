package direct

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
)

// Path checks (swarm mode). Without ICE a member's static path is learned
// from where its sealed messages come from. The sender signature proves
// who sealed a message, not where the sender is: anyone who saw a message
// (a LAN outsider sees every multicast announcement) can send a copy from
// any source address, and the first copy to arrive is the one the mesh
// accepts. So a static path moves to an address, and is kept alive, only
// on proof from that address:
//
//   - A fresh authenticated message (the mesh accepted it as new, not a
//     replay) from the path's own address confirms the path for StaticHold.
//     A replayed copy proves nothing and confirms nothing.
//   - An authenticated message from another address, fresh or replayed,
//     starts a check: the transport sends a probe with a random 64-bit
//     nonce to that address, sealed and signed by the caller
//     (Config.SealSignal). The member answers from its socket with a
//     reply echoing the nonce, sealed and signed. A reply that comes from
//     the probed address, within checkTimeout, proves that the member
//     receives and sends there, and the path moves. A replayed copy from
//     the path's own address starts a check too once the last
//     confirmation is older than recheckAfter, so racing copies that make
//     the member's own messages look like replays cannot starve the path.
//   - WireGuard and STUN datagrams never keep a static path alive: the
//     transport sees only ciphertext, and anyone can send such datagrams
//     from any address. (WireGuard drops forged ones; a path kept "alive"
//     by them would only black-hole the peer's traffic.)
//
// Who can still move a path: only whoever receives the probe at the new
// address and gets the member to answer from there, i.e. someone relaying
// the member's traffic, which is what a path through that address is.
const (
	// checkTimeout bounds the wait for a reply: a round trip on a LAN or
	// across the internet takes far less; a lost probe is sent again on
	// the member's next message.
	checkTimeout = 5 * time.Second

	// checkResend spaces probes to one address: copies of one message
	// (unicast and multicast) arrive together.
	checkResend = time.Second

	// maxChecks bounds the checks pending per peer; a new one replaces
	// the oldest. Four cover a member on the move plus copies from
	// spoofed addresses.
	maxChecks = 4

	// recheckAfter is how old the path's last confirmation must be before
	// a replayed copy from its own address starts a check: more than one
	// AnnounceInterval (15 s), so that the routine second copy of each
	// announcement (unicast and multicast) never does.
	recheckAfter = 20 * time.Second

	// probeRate and probeBurst bound the probes sent per peer: replays
	// from spoofed addresses must not make the node a reflector.
	probeRate  = 1
	probeBurst = 4
)

// pathCheck is a probe sent and not yet answered.
type pathCheck struct {
	addr  netip.AddrPort
	nonce uint64
	sent  time.Time
}

// Heard tells the transport that an authenticated sealed message from peer
// (its signature verified) came from addr; fresh says the mesh accepted it
// as new, not as a replay. A fresh one from the peer's static address
// confirms the path; otherwise a path check of addr may start (see above).
// A fresh message adds the peer if it is new; a replayed one from a peer
// not added is ignored.
func (t *Transport) Heard(key nodekey.Public, addr netip.AddrPort, fresh bool) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if !ValidRemote(addr) || !t.fam.has(addr.Addr()) || key == t.self || t.excluded(addr.Addr()) {
		return
	}
	var p *peer
	if fresh {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return
		}
		p = t.addPeerLocked(key)
		t.mu.Unlock()
	} else if p = t.peer(key); p == nil {
		return
	}
	now := t.now()
	if sp := p.static.Load(); sp != nil && sp.addr == addr {
		if fresh {
			sp.confirmed.Store(now)
			return
		}
		if now-sp.confirmed.Load() < int64(recheckAfter) {
			return
		}
	}
	t.startCheck(p, addr)
}

// startCheck probes addr for p, unless a probe went there just now.
func (t *Transport) startCheck(p *peer, addr netip.AddrPort) {
	if t.cfg.SealSignal == nil {
		return
	}
	now := time.Now()
	p.checkMu.Lock()
	live := p.checks[:0]
	for _, c := range p.checks {
		if now.Sub(c.sent) < checkTimeout {
			live = append(live, c)
		}
	}
	p.checks = live
	for _, c := range p.checks {
		if c.addr == addr && now.Sub(c.sent) < checkResend {
			p.checkMu.Unlock()
			return
		}
	}
	if !p.probes.AllowN(now, 1) {
		p.checkMu.Unlock()
		t.stats.dropProbeRate.Add(1)
		return
	}
	// crypto/rand never fails (it panics rather); the low bit is set
	// because a zero nonce means none.
	var nb [8]byte
	rand.Read(nb[:])
	nonce := binary.BigEndian.Uint64(nb[:]) | 1
	if len(p.checks) == maxChecks {
		p.checks = append(p.checks[:0], p.checks[1:]...)
	}
	p.checks = append(p.checks, pathCheck{addr: addr, nonce: nonce, sent: now})
	p.checkMu.Unlock()
	if err := t.sendPathSignal(addr, &signal{Type: sigProbe, Session: nonce}); err != nil {
		p.log.Debug("direct: path check not sent", "to", addr.String(), "err", err)
		return
	}
	t.stats.probesSent.Add(1)
	p.log.Debug("direct: checking path", "addr", addr.String())
}

// sendPathSignal seals s with Config.SealSignal and sends it to addr.
func (t *Transport) sendPathSignal(addr netip.AddrPort, s *signal) error {
	body, err := appendSignal(nil, s)
	if err != nil {
		return err
	}
	b, err := t.cfg.SealSignal(body)
	if err != nil {
		return err
	}
	return t.SendMesh(addr, b)
}

// HandlePathSignal takes a path-check signal (a probe or a reply) that
// arrived on this transport's socket from src, sent by peer: the caller
// opened the sealed message, verified the sender signature and accepted it
// as fresh. A probe is answered to src; a reply matching a pending check
// of src proves the path (see above). Anything else is an error the caller
// may log at debug level.
func (t *Transport) HandlePathSignal(from nodekey.Public, src netip.AddrPort, msg []byte) error {
	s, err := parseSignal(msg)
	if err != nil {
		t.stats.signalsBad.Add(1)
		return fmt.Errorf("direct: path signal from %s: %w", from.ShortString(), err)
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	if !ValidRemote(src) || t.excluded(src.Addr()) {
		return fmt.Errorf("direct: path signal from %s at %s: not an address a path may have", from.ShortString(), src)
	}
	switch s.Type {
	case sigProbe:
		if err := t.sendPathSignal(src, &signal{Type: sigReply, Session: s.Session}); err != nil {
			return fmt.Errorf("direct: answering %s's path check at %s: %w", from.ShortString(), src, err)
		}
		return nil
	case sigReply:
		p := t.peer(from)
		if p == nil || !p.takeCheck(src, s.Session, time.Now()) {
			t.stats.dropBadReply.Add(1)
			return fmt.Errorf("direct: path check reply from %s at %s: no such check pending", from.ShortString(), src)
		}
		t.proven(p, src)
		return nil
	}
	t.stats.signalsBad.Add(1)
	return fmt.Errorf("direct: %v signal from %s over UDP: ICE signaling rides relays only", s.Type, from.ShortString())
}

// takeCheck removes and reports the pending check of addr with nonce.
func (p *peer) takeCheck(addr netip.AddrPort, nonce uint64, now time.Time) bool {
	p.checkMu.Lock()
	defer p.checkMu.Unlock()
	for i, c := range p.checks {
		if c.addr == addr && c.nonce == nonce && now.Sub(c.sent) < checkTimeout {
			p.checks = append(p.checks[:i], p.checks[i+1:]...)
			return true
		}
	}
	return false
}

// proven makes addr, which answered a path check, p's static path.
func (t *Transport) proven(p *peer, addr netip.AddrPort) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.peer(p.key) != p {
		return // removed meanwhile
	}
	t.stats.pathsProven.Add(1)
	t.setStaticLocked(p, addr, t.now())
}
