package direct

import (
	"bytes"
	"math/rand/v2"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/stun/v4"
)

// Fast loss detection. LossTimeout (3 s of silence) is the rule for an
// idle path, where the peer's 1 s consent checks are all there is to hear.
// A path carrying traffic can tell sooner, without mistaking a busy path
// for a dead one: when this side has sent since it last heard from the
// peer, and has heard nothing for suspectAfter, it asks the peer directly
// (an ICE connectivity check on the selected pair, which the peer's agent
// answers at once, RFC 8445 section 7.3) and keeps asking every
// probeInterval. Any packet from the peer ends the suspicion. Only if
// probeWait passes after the first probe with nothing at all from the
// peer does the path stop carrying packets (livePath), and the Bind sends
// over the relay.
//
// A busy path keeps answering: under load the peer's own packets (TCP
// acknowledgements, its data) arrive continuously, and a probe is answered
// within a round trip plus queueing. The silence has to outlast
// suspectAfter and then probeWait: several probes and every other packet
// lost. Even then the ICE session is kept until LossTimeout: if the peer
// is heard again meanwhile, the path carries packets again at once and
// Stats.FalseLosses counts the mistake.

const (
	// suspectAfter is the silence after which a path this side is sending
	// on is probed: several round trips of any path worth keeping direct,
	// and half the peer's consent-check interval.
	suspectAfter = 500 * time.Millisecond

	// probeInterval spaces probes while a path is suspect, so that one
	// lost probe (under load, a queue drops some) does not fail the path.
	probeInterval = 100 * time.Millisecond

	// probeWaitMin is how long probes may go unanswered before the path
	// stops carrying packets, plus twice the pair's round-trip time.
	probeWaitMin = 500 * time.Millisecond
)

// probeState is the outstanding probe of a suspect path, published
// whole so the receive path reads it without a lock.
type probeState struct {
	tx  [stun.TransactionIDSize]byte
	pwd string // the peer's ICE password: its answer is keyed with it
}

// noteSend records that packets left on the path, and wakes the peer's
// state machine when the path has become suspect, so the first probe
// leaves now rather than at its next tick.
func (p *peer) noteSend(dp *directPath, now int64) {
	if dp.static {
		return
	}
	if now-dp.lastSend.Load() > touchGranularity {
		dp.lastSend.Store(now)
	}
	if dp.probeSince.Load() == 0 && dp.suspect(now) {
		p.wake()
	}
}

// suspect reports whether this side sent since it last heard from the
// peer and has heard nothing for suspectAfter.
func (dp *directPath) suspect(now int64) bool {
	last := dp.lastRecv.Load()
	return now-last > int64(suspectAfter) && dp.lastSend.Load() > last
}

// silenced reports whether probes have gone unanswered for the probe
// wait: nothing at all arrived from the peer since the first one.
func (dp *directPath) silenced(now int64) bool {
	since := dp.probeSince.Load()
	return since != 0 && dp.lastRecv.Load() < since && now-since > dp.probeWait.Load()
}

// silenced is dp.silenced, counting the first time it cuts the path.
func (p *peer) silenced(dp *directPath, now int64) bool {
	if !dp.silenced(now) {
		return false
	}
	if dp.cut.CompareAndSwap(false, true) {
		p.t.stats.fastLosses.Add(1)
		p.wake() // to log it
	}
	return true
}

// probe runs from the state machine while the path is direct: it starts,
// repeats or ends the probing of a suspect path, and counts a loss that
// proved false.
func (p *peer) probe(dp *directPath, rtt time.Duration, now int64) {
	since := dp.probeSince.Load()
	if since != 0 && dp.lastRecv.Load() >= since {
		// Heard from the peer: not (or no longer) lost.
		if dp.cut.Swap(false) {
			p.t.stats.falseLosses.Add(1)
			p.log.Info("direct path answers again; back from the relay")
			p.pathChanged()
		}
		dp.cutLogged = false
		dp.probeSince.Store(0)
		dp.probing.Store(nil)
		return
	}
	if since == 0 && !dp.suspect(now) {
		return
	}
	if since != 0 && !dp.cutLogged && p.silenced(dp, now) {
		dp.cutLogged = true
		p.log.Info("direct path unanswered; falling back", "silent", time.Duration(now-dp.lastRecv.Load()).Round(time.Millisecond))
		p.pathChanged()
	}
	if since != 0 && now-dp.lastProbe < int64(probeInterval) {
		return
	}
	if since == 0 {
		dp.probeWait.Store(int64(probeWaitMin + 2*rtt))
		dp.probeSince.Store(now)
	}
	dp.lastProbe = now
	p.sendProbe(dp)
}

// sendProbe sends an ICE connectivity check for the selected pair, as the
// peer's agent expects it (RFC 8445 section 7.2.2: USERNAME of both
// fragments, this side's role, keyed with the peer's password), and keeps
// its transaction id so the receive path recognises the answer.
func (p *peer) sendProbe(dp *directPath) {
	s := p.sess
	if s == nil || s.remoteUfrag == "" {
		return
	}
	ps := &probeState{tx: stun.NewTransactionID(), pwd: s.remotePwd}
	var role stun.Setter = ice.AttrControlled(rand.Uint64())
	if p.controlling {
		role = ice.AttrControlling(rand.Uint64())
	}
	m, err := stun.Build(stun.NewTransactionIDSetter(ps.tx), stun.BindingRequest,
		stun.NewUsername(s.remoteUfrag+":"+s.ufrag), role,
		ice.PriorityAttr(probePriority),
		stun.NewShortTermIntegrity(s.remotePwd), stun.Fingerprint)
	if err != nil {
		p.log.Debug("direct: building probe", "err", err)
		return
	}
	dp.probing.Store(ps)
	p.t.stats.liveProbes.Add(1)
	p.probeTimer.Reset(probeInterval)
	if _, err := p.t.udp.WriteToUDPAddrPort(m.Raw, dp.addr); err != nil {
		p.log.Debug("direct: sending probe", "to", dp.addr.String(), "err", err)
	}
}

// probePriority is the PRIORITY the probe claims (RFC 8445 section 7.1.1):
// a host candidate's, which the answering agent only uses if it learns a
// new peer-reflexive candidate from the probe, never the case on a pair it
// already selected.
const probePriority = 2130706431

// probeAnswer reports whether b, a STUN message from the path's address,
// is the authenticated answer to its outstanding probe, and if so credits
// the path with it. The answer is consumed here: the local ICE agent never
// asked.
func (dp *directPath) probeAnswer(b []byte, now int64) bool {
	ps := dp.probing.Load()
	if ps == nil || len(b) < 20 || !bytes.Equal(b[8:20], ps.tx[:]) {
		return false
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil || m.Type != stun.BindingSuccess ||
		stun.MessageIntegrity(ps.pwd).Check(m) != nil {
		return false
	}
	dp.lastRecv.Store(now)
	return true
}
