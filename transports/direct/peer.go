package direct

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"golang.org/x/time/rate"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/transports"
)

// peerInbox bounds signals waiting for a peer's state machine. A peer sends
// a few per attempt; excess (a flood, or a stalled machine) is dropped like
// any lost signal and retransmission recovers.
const peerInbox = 16

// peer is the direct path to one member: a state machine goroutine that
// owns the ICE sessions, and the validated path the data plane reads.
type peer struct {
	t           *Transport
	key         nodekey.Public
	ep          conn.Endpoint // the Bind endpoint, made once so receive does not allocate
	controlling bool
	log         *slog.Logger

	inbox    chan signal
	kick     chan struct{}
	restartc chan struct{} // Restart asks for a fresh session (restart.go)
	newCand  chan struct{} // a new local candidate (mapped.go): a fresh session unless direct
	cancel   context.CancelFunc
	done     chan struct{}

	path   atomic.Pointer[directPath] // ICE's validated path; nil unless direct
	static atomic.Pointer[directPath] // the static path (SetStatic); nil if none

	mu     sync.Mutex
	status PathInfo

	// Path checks (pathcheck.go), swarm mode.
	checkMu sync.Mutex
	checks  []pathCheck // pending, at most maxChecks
	probes  *rate.Limiter

	// Owned by run.
	sess       *session
	state      PathState
	retryAt    time.Time
	attempts   int       // failed attempts since the last direct path, for backoff
	connSince  time.Time // controlled: when it began waiting for an offer
	reqNext    time.Time // controlled: when to (re)send a request
	reqGap     time.Duration
	lastSeen   uint64    // controlled: newest session id offered
	lastStart  time.Time // controlling: when the current session started
	pendingNew bool      // controlling: the peer asked for a session; start when allowed
	pendingMin uint64    // controlling: the new session id must exceed this
	// peerUpdates: the peer's latest offer, answer or request said it
	// takes candidate updates (flagUpdates).
	peerUpdates bool
	probeTimer  *time.Timer // wakes the state machine for the next probe (probe.go)
}

// directPath is a validated path: the peer's address on the selected ICE
// pair, or its static address, and when a packet last came from it.
type directPath struct {
	addr     netip.AddrPort
	udpAddr  *net.UDPAddr
	lastRecv atomic.Int64 // Transport.now() of the last packet from addr; ICE paths only

	// ICE paths only (see tentative.go and probe.go).
	validated  int64                      // Transport.now() when this side validated it
	peerUses   atomic.Bool                // a WireGuard packet from the peer arrived on it
	lastSend   atomic.Int64               // Transport.now() of the last packet sent on it
	probeSince atomic.Int64               // Transport.now() of the first probe of a suspicion; 0 if none
	probeWait  atomic.Int64               // how long probes may go unanswered before the path is cut
	probing    atomic.Pointer[probeState] // the outstanding probe; nil if none
	cut        atomic.Bool                // silenced: probes went unanswered (counted once)
	lastProbe  int64                      // owned by the state machine
	cutLogged  bool                       // owned by the state machine

	// Static paths only (see static.go).
	static    bool
	since     time.Time    // when the address was set
	confirmed atomic.Int64 // Transport.now() of the last authenticated confirmation of addr
}

func newPeer(t *Transport, key nodekey.Public) *peer {
	ctrl := t.controlling(key)
	role := "controlled"
	if ctrl {
		role = "controlling"
	}
	return &peer{
		t:           t,
		key:         key,
		ep:          transports.Endpoint{Key: key},
		controlling: ctrl,
		log:         t.log.With("peer", key.ShortString(), "role", role),
		inbox:       make(chan signal, peerInbox),
		kick:        make(chan struct{}, 1),
		restartc:    make(chan struct{}, 1),
		newCand:     make(chan struct{}, 1),
		done:        make(chan struct{}),
		probes:      rate.NewLimiter(probeRate, probeBurst),
	}
}

// start runs the peer's ICE state machine; a peer of a transport with
// DisableICE has none and only static paths.
func (p *peer) start() {
	if p.t.cfg.DisableICE {
		return
	}
	ctx, cancel := context.WithCancel(p.t.ctx)
	p.cancel = cancel
	go p.run(ctx)
}

// stop ends the state machine and waits for it (and its ICE agent).
func (p *peer) stop() {
	if p.cancel == nil {
		return // never started
	}
	p.cancel()
	<-p.done
}

// post queues a received signal; it never blocks.
func (p *peer) post(s signal) {
	select {
	case p.inbox <- s:
	default:
		p.log.Debug("direct: signal dropped, inbox full", "type", s.Type)
	}
}

// wake asks the state machine to look at its session now.
func (p *peer) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// livePath returns ICE's path if a packet arrived on it within
// LossTimeout, else the static path if it is usable (see static.go).
func (p *peer) livePath(now int64) *directPath {
	if dp := p.path.Load(); dp != nil && now-dp.lastRecv.Load() <= int64(LossTimeout) && !p.silenced(dp, now) {
		return dp
	}
	if sp := p.static.Load(); sp != nil && sp.usable(now) {
		return sp
	}
	return nil
}

// usesAddr reports whether addr is one of the peer's current paths.
func (p *peer) usesAddr(addr netip.AddrPort) bool {
	if dp := p.path.Load(); dp != nil && dp.addr == addr {
		return true
	}
	sp := p.static.Load()
	return sp != nil && sp.addr == addr
}

// touchGranularity limits stores to the shared timestamp to one per
// millisecond, so receiving cores do not fight over its cache line.
const touchGranularity = int64(time.Millisecond)

// touch records that a packet arrived from addr on ICE's path. A static
// path is not touched: it lives on authenticated traffic only (static.go).
// ICE's path may be, because ICE checks consent with authenticated STUN
// itself and drops the path when that fails, and a relay is there to fall
// back to.
func (p *peer) touch(addr netip.AddrPort, now int64) {
	if dp := p.path.Load(); dp != nil && dp.addr == addr && now-dp.lastRecv.Load() > touchGranularity {
		dp.lastRecv.Store(now)
	}
}

func (p *peer) info() PathInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

func (p *peer) setState(st PathState, remote netip.AddrPort, rtt time.Duration, now time.Time) {
	p.state = st
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status.State != st {
		p.status.Since = now
	}
	p.status.State, p.status.Remote, p.status.RTT = st, remote, rtt
}

func (p *peer) run(ctx context.Context) {
	defer close(p.done)
	defer p.endSession()
	tick := time.NewTicker(tickInterval)
	defer tick.Stop()
	p.probeTimer = time.AfterFunc(time.Hour, p.wake)
	defer p.probeTimer.Stop()
	p.attempt(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-p.inbox:
			p.onSignal(s, time.Now())
		case <-p.kick:
		case <-p.restartc:
			p.restart(time.Now())
		case <-p.newCand:
			p.offerNewCandidate(time.Now())
		case <-tick.C:
		}
		p.step(time.Now())
	}
}

// attempt begins connecting: the controlling side starts a session, the
// controlled side asks for one.
func (p *peer) attempt(now time.Time) {
	if p.controlling {
		p.startSession(now, 0)
		return
	}
	p.connSince, p.reqNext, p.reqGap = now, now, offerRetransmitMin
	p.setState(StateConnecting, netip.AddrPort{}, 0, now)
}

func (p *peer) startSession(now time.Time, atLeast uint64) {
	p.endSession()
	p.pendingNew, p.lastStart = false, now
	s, err := p.t.newSession(p.t.nextSession(atLeast), true, p.wake)
	if err != nil {
		p.log.Warn("direct: starting ICE", "err", err)
		p.lose(now, "ice agent")
		return
	}
	s.nextSend = now
	p.sess = s
	p.setState(StateConnecting, netip.AddrPort{}, 0, now)
}

// endSession closes the ICE agent and withdraws the direct path.
func (p *peer) endSession() {
	if dp := p.path.Swap(nil); dp != nil {
		p.t.setAddr(netip.AddrPort{}, nil, dp.addr)
	}
	if p.sess != nil {
		p.sess.close()
		p.sess = nil
	}
}

// lose ends the attempt or the path and schedules the next attempt with
// exponential backoff and jitter.
func (p *peer) lose(now time.Time, reason string) {
	if p.state == StateDirect {
		p.log.Info("direct path lost; falling back", "reason", reason)
		defer p.pathChanged()
	} else {
		p.log.Debug("direct: attempt failed", "reason", reason)
	}
	p.endSession()
	p.retryAt = now.Add(retryDelay(p.attempts))
	p.attempts++
	p.setState(StateLost, netip.AddrPort{}, 0, now)
}

// retryDelay is retryMin doubled per failed attempt up to retryMax, with
// the upper half jittered so peers that failed together retry apart.
func retryDelay(attempts int) time.Duration {
	d := retryMax
	if attempts < 16 {
		d = min(retryMin<<attempts, retryMax)
	}
	return d/2 + rand.N(d/2+1)
}

func (p *peer) signal(s *signal) {
	if !p.t.noUpdates {
		s.Flags |= flagUpdates
	}
	b, err := appendSignal(nil, s)
	if err != nil {
		p.log.Warn("direct: encoding signal", "type", s.Type, "err", err)
		return
	}
	if len(b) > maxSignalSizeNoFlags {
		// Members before the flags refuse it whole; the flags byte is
		// last, and a signal without it means no flags.
		b = b[:maxSignalSizeNoFlags]
	}
	if err := p.t.cfg.Signal(p.key, b); err != nil {
		p.log.Debug("direct: signal not sent", "type", s.Type, "err", err)
	}
}

// onSignal applies a signal from the peer.
func (p *peer) onSignal(s signal, now time.Time) {
	switch s.Type {
	case sigOffer, sigAnswer, sigRequest:
		p.peerUpdates = s.Flags&flagUpdates != 0 && !p.t.noUpdates
	}
	switch {
	case p.controlling && s.Type == sigAnswer:
		ses := p.sess
		if ses == nil || s.Session != ses.id || p.state != StateConnecting {
			return // for a session that is gone
		}
		if ses.answered {
			// A duplicate, or an update: new candidates of the same
			// session, from a peer that takes updates.
			if p.peerUpdates && s.Ufrag == ses.remoteUfrag && s.Pwd == ses.remotePwd {
				p.t.stats.candidateUpdates.Add(uint64(ses.addSignalled(s.Candidates, p.key)))
			}
			return
		}
		ses.answered = true
		ses.remoteUfrag, ses.remotePwd = s.Ufrag, s.Pwd
		ses.addSignalled(s.Candidates, p.key)
		if _, err := ses.agent.StartDial(s.Ufrag, s.Pwd); err != nil {
			p.log.Debug("direct: starting checks", "err", err)
			p.lose(now, "ice dial")
		}
	case p.controlling && s.Type == sigRequest:
		var cur uint64
		if p.sess != nil {
			cur = p.sess.id
		}
		switch {
		case s.Session >= cur, s.Session == 0 && p.state == StateDirect:
			// The peer gave up on our newest session, or has none (it
			// restarted): start over, rate-limited in step.
			p.pendingNew = true
			p.pendingMin = max(p.pendingMin, s.Session)
		case p.sess != nil && !p.sess.answered:
			// It has not seen the current offer yet: resend it now.
			p.sess.nextSend, p.sess.sendGap = now, offerRetransmitMin
		}
	case !p.controlling && s.Type == sigOffer:
		if ses := p.sess; ses != nil && s.Session == ses.id {
			// A retransmission (our answer was lost: resend it) or an
			// update (take its new candidates; the answer that goes
			// back is a harmless duplicate).
			ses.answerSent = false
			if p.peerUpdates && s.Ufrag == ses.remoteUfrag && s.Pwd == ses.remotePwd {
				p.t.stats.candidateUpdates.Add(uint64(ses.addSignalled(s.Candidates, p.key)))
			}
			return
		}
		if s.Session <= p.lastSeen {
			return // older than a session we already took
		}
		p.lastSeen = s.Session
		p.endSession()
		ses, err := p.t.newSession(s.Session, false, p.wake)
		if err != nil {
			p.log.Warn("direct: starting ICE", "err", err)
			p.lose(now, "ice agent")
			return
		}
		p.sess = ses
		ses.remoteUfrag, ses.remotePwd = s.Ufrag, s.Pwd
		p.setState(StateConnecting, netip.AddrPort{}, 0, now)
		ses.addSignalled(s.Candidates, p.key)
		// Checks start when the answer goes out (sendCandidates).
	default:
		p.log.Debug("direct: ignoring signal for the other role", "type", s.Type)
	}
}

// step advances the state machine on timers and pion's progress.
func (p *peer) step(now time.Time) {
	if p.pendingNew && now.Sub(p.lastStart) >= minSessionInterval {
		p.startSession(now, p.pendingMin)
	}
	switch p.state {
	case StateConnecting:
		p.stepConnecting(now)
	case StateDirect:
		ses := p.sess
		if ses.view().dead() {
			p.lose(now, "ice failed")
			return
		}
		dp := p.path.Load()
		if dp == nil || p.t.now()-dp.lastRecv.Load() > int64(LossTimeout) {
			p.lose(now, "no packet for "+LossTimeout.String())
			return
		}
		remote, rtt, ok := ses.selectedRemote()
		p.probe(dp, rtt, p.t.now())
		if ok && remote != p.status.Remote {
			p.useRemote(remote) // ICE moved to another pair
		}
		p.setState(StateDirect, remote, rtt, now)
	case StateLost:
		if !now.Before(p.retryAt) {
			p.attempt(now)
		}
	}
}

func (p *peer) stepConnecting(now time.Time) {
	ses := p.sess
	if ses == nil { // controlled, waiting for an offer
		if now.Sub(p.connSince) > connectTimeout {
			p.lose(now, "no offer")
			return
		}
		if !now.Before(p.reqNext) {
			p.signal(&signal{Type: sigRequest, Session: p.lastSeen})
			p.reqNext = now.Add(p.reqGap)
			p.reqGap = min(p.reqGap*2, offerRetransmitMax)
		}
		return
	}
	v := ses.view()
	if v.dead() || now.Sub(ses.started) > connectTimeout {
		p.lose(now, "ice attempt timed out")
		return
	}
	p.sendCandidates(ses, v, now)
	if v.state != ice.ConnectionStateConnected || !v.selected {
		return
	}
	remote, rtt, ok := ses.selectedRemote()
	if !ok {
		return
	}
	p.useRemote(remote)
	p.attempts = 0
	p.setState(StateDirect, remote, rtt, now)
	p.log.Info("direct path up", "remote", remote.String(), "rtt", rtt, "took", now.Sub(ses.started).Round(time.Millisecond))
}

// sendCandidates sends the session's offer (controlling) or answer
// (controlled) when it is due. Once gathering has ended it is due as
// before candidate updates: the offer until answered, with backoff, the
// answer once per offer received. To a peer that takes updates it is due
// earlyCandidates after the session started, with the candidates at hand,
// and again whenever they have changed since (a STUN server answered),
// whether or not the peer has answered.
func (p *peer) sendCandidates(ses *session, v sessionView, now time.Time) {
	if !v.gathered && (!p.peerUpdates || now.Sub(ses.started) < earlyCandidates) {
		return
	}
	var due bool
	if p.controlling {
		due = !ses.answered && !now.Before(ses.nextSend)
	} else {
		due = !ses.answerSent
	}
	if !due && (!p.peerUpdates || !ses.sentOnce) {
		return // nothing owed, and no update to send (each tick lands here)
	}
	cands := ses.candidates()
	if len(cands) == 0 && !v.gathered {
		return // nothing to offer yet
	}
	if !due && slices.Equal(cands, ses.sent) {
		return
	}
	typ := sigAnswer
	if p.controlling {
		typ = sigOffer
		if !ses.answered {
			ses.nextSend = now.Add(ses.sendGap)
			ses.sendGap = min(ses.sendGap*2, offerRetransmitMax)
		}
	}
	p.signal(&signal{Type: typ, Session: ses.id, Ufrag: ses.ufrag, Pwd: ses.pwd, Candidates: cands})
	ses.sent, ses.sentOnce = cands, true
	if p.controlling {
		return
	}
	ses.answerSent = true
	if !ses.accepting {
		// The controlled side starts its checks with its first answer,
		// not on the offer: the controlling agent answers checks only
		// once the answer has reached it, and pion gives up on a pair
		// after a few unanswered checks. Started on the offer, the checks
		// sent while this side gathered (up to stunGatherTimeout) went
		// unanswered and failed their pairs; in one start of the bench's
		// worker (of ~40) this side then never took the controlling
		// side's nomination and kept checking until the attempt timed
		// out, 15 s before the next one made the path.
		ses.accepting = true
		if _, err := ses.agent.StartAccept(ses.remoteUfrag, ses.remotePwd); err != nil {
			p.log.Debug("direct: starting checks", "err", err)
			p.lose(now, "ice accept")
		}
	}
}

// useRemote makes remote the validated path: WireGuard packets from it are
// attributed to this peer and packets to the peer go to it.
func (p *peer) useRemote(remote netip.AddrPort) {
	now := p.t.now()
	dp := &directPath{addr: remote, udpAddr: net.UDPAddrFromAddrPort(remote), validated: now}
	dp.lastRecv.Store(now)
	var old netip.AddrPort
	if prev := p.path.Swap(dp); prev != nil {
		old = prev.addr
	}
	p.t.setAddr(remote, p, old)
	p.pathChanged()
}

// pathChanged tells Config.OnPathChange that packets to the peer take
// another path now: the direct one appeared, moved, or stopped carrying.
func (p *peer) pathChanged() {
	if f := p.t.cfg.OnPathChange; f != nil {
		f(p.key)
	}
}
