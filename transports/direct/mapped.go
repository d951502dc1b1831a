package direct

import (
	"net/netip"
	"time"

	"github.com/pion/ice/v4"
)

// A gateway's port mapping (package portmap, run by the caller) forwards UDP
// sent to an external address and port to this transport's socket. That
// address is what STUN would report if the NAT kept one mapping for every
// destination: a symmetric NAT does not, so STUN's answer is useless to
// peers, and the mapped address is the one that works. It is offered to
// peers as one more server-reflexive candidate, first in the list. The
// local ICE agent needs no candidate of its own for it: a peer's check
// sent there arrives on the host candidate's socket like any other, and
// the agent answers it and learns the peer's address from it.

// mappedFoundation sets the mapped candidate apart from STUN's
// server-reflexive one, which may share its address (RFC 8445 section
// 5.1.1.3: a different base or server means a different foundation).
const mappedFoundation = "portmap"

// SetMapped sets the external address of the gateway's port mapping of
// this transport's port, and internal, the address the gateway forwards to
// (this host's, and LocalAddr's port); the zero ext withdraws it. A new or
// moved mapping starts a fresh ICE session, which offers it, with every
// peer not on a direct path (newCandidate); a withdrawal restarts nothing.
func (t *Transport) SetMapped(ext, internal netip.AddrPort) {
	if !ext.IsValid() || t.excluded(ext.Addr()) || !ext.Addr().Unmap().Is4() {
		if t.mapped.Swap(nil) != nil {
			t.log.Info("direct: no longer offering a port-mapped candidate")
		}
		return
	}
	c, err := ice.NewCandidateServerReflexive(&ice.CandidateServerReflexiveConfig{
		Network:    "udp",
		Address:    ext.Addr().Unmap().String(),
		Port:       int(ext.Port()),
		Component:  1,
		Foundation: mappedFoundation,
		RelAddr:    internal.Addr().Unmap().String(),
		RelPort:    int(internal.Port()),
	})
	if err != nil {
		t.log.Warn("direct: port-mapped candidate", "external", ext.String(), "err", err)
		return
	}
	m := c.Marshal()
	if len(m) > maxCandidateLen {
		return
	}
	if old := t.mapped.Swap(&m); old == nil || *old != m {
		n := t.newCandidate()
		t.log.Info("direct: offering a port-mapped candidate", "external", ext.String(), "peers", n)
	}
}

// newCandidate tells every peer that a local candidate appeared (the
// mapped one) and returns how many peers it told. A session under way
// offered the candidates it had when it began, and an attempt that failed
// without the new one would be retried only after its timeout and backoff
// (about 12 s for the first): the members a symmetric NAT kept on the
// relay, exactly those the mapping is for, would wait that long. So each
// peer not on a direct path starts a fresh session at once
// (offerNewCandidate); a direct path is left alone.
func (t *Transport) newCandidate() int {
	n := 0
	for _, p := range *t.peers.Load() {
		select {
		case p.newCand <- struct{}{}:
		default: // one is already pending
		}
		n++
	}
	return n
}

// offerNewCandidate runs on the peer's state machine: unless the path is
// direct, a fresh attempt now (restart.go), whose offer or answer carries
// the new candidate.
func (p *peer) offerNewCandidate(now time.Time) {
	if p.state == StateDirect {
		return
	}
	p.log.Debug("direct: a new local candidate; starting a fresh session")
	p.restart(now)
}
