package direct

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pion/ice/v4"

	"github.com/plures/plurenet/internal/nodekey"
)

// session is one ICE attempt with one peer: an agent with fresh
// credentials. A retry or a restart makes a new session rather than
// restarting the agent, so nothing from a failed attempt lingers.
type session struct {
	t           *Transport
	id          uint64
	controlling bool
	agent       *ice.Agent
	started     time.Time
	ufrag, pwd  string

	// Set by pion's callbacks, read by the peer's state machine.
	mu       sync.Mutex
	hosts    []string
	srflx    []string
	gathered bool
	state    ice.ConnectionState
	selected bool

	// Owned by the peer's state machine.
	early       *time.Timer         // wakes the state machine earlyCandidates after the start
	sent        []string            // the candidates our latest offer or answer carried
	sentOnce    bool                // an offer or answer went out
	remoteSeen  map[string]struct{} // the peer's candidates taken so far (addSignalled)
	answered    bool                // controlling: the answer arrived and checks started
	answerSent  bool                // controlled: the answer for the latest offer went out
	accepting   bool                // controlled: checks started (StartAccept), with the first answer
	remoteUfrag string              // the peer's ICE credentials, from its offer or answer
	remotePwd   string
	nextSend    time.Time     // controlling: when to (re)send the offer
	sendGap     time.Duration // controlling: current retransmit interval
}

// newSession creates an agent and starts gathering; kick is called (without
// blocking) whenever pion reports progress.
func (t *Transport) newSession(id uint64, controlling bool, kick func()) (*session, error) {
	types := []ice.CandidateType{ice.CandidateTypeHost}
	if len(t.urls) > 0 {
		types = append(types, ice.CandidateTypeServerReflexive)
	}
	opts := []ice.AgentOption{
		ice.WithNet(t.inet),
		ice.WithUDPMux(t.mux),
		ice.WithUDPMuxSrflx(t.mux),
		ice.WithUrls(t.urls),
		ice.WithNetworkTypes(t.fam.networkTypes()),
		ice.WithCandidateTypes(types),
		ice.WithMulticastDNSMode(ice.MulticastDNSModeDisabled),
		ice.WithKeepaliveInterval(KeepaliveInterval),
		ice.WithDisconnectedTimeout(LossTimeout),
		ice.WithFailedTimeout(connectTimeout - LossTimeout),
		ice.WithSTUNGatherTimeout(stunGatherTimeout),
		ice.WithLoggerFactory(pionLogger{log: t.log}),
	}
	if t.fam.v4 && t.fam.v6 {
		opts = append(opts, ice.WithHostAcceptanceMinWait(dualStackSettle))
	}
	agent, err := ice.NewAgentWithOptions(opts...)
	if err != nil {
		return nil, fmt.Errorf("direct: ICE agent: %w", err)
	}
	s := &session{t: t, id: id, controlling: controlling, agent: agent, started: time.Now(), sendGap: offerRetransmitMin}
	fail := func(err error) (*session, error) {
		agent.Close()
		return nil, fmt.Errorf("direct: ICE agent: %w", err)
	}
	if s.ufrag, s.pwd, err = agent.GetLocalUserCredentials(); err != nil {
		return fail(err)
	}
	err = agent.OnCandidate(func(c ice.Candidate) {
		s.mu.Lock()
		if c == nil {
			s.gathered = true
		} else if a, err := netip.ParseAddr(c.Address()); err != nil || t.excluded(a) || !unicast(a) {
			// An overlay address (a kernel TUN's) is never a path, and
			// an IPv6 link-local one means nothing to a peer without a
			// zone (candidates.go): not offered.
		} else if m := c.Marshal(); len(m) <= maxCandidateLen {
			if c.Type() == ice.CandidateTypeServerReflexive {
				if m, ok := withoutRelated(c, a); ok && !slices.Contains(s.srflx, m) {
					s.srflx = append(s.srflx, m)
				}
			} else {
				s.hosts = append(s.hosts, m)
			}
		}
		s.mu.Unlock()
		kick()
	})
	if err != nil {
		return fail(err)
	}
	if err := agent.OnConnectionStateChange(func(st ice.ConnectionState) {
		s.mu.Lock()
		s.state = st
		s.mu.Unlock()
		kick()
	}); err != nil {
		return fail(err)
	}
	if err := agent.OnSelectedCandidatePairChange(func(ice.Candidate, ice.Candidate) {
		s.mu.Lock()
		s.selected = true
		s.mu.Unlock()
		kick()
	}); err != nil {
		return fail(err)
	}
	if err := agent.GatherCandidates(); err != nil {
		return fail(err)
	}
	s.early = time.AfterFunc(earlyCandidates, kick)
	return s, nil
}

// addSignalled gives the agent those of a signal's candidates it has not
// had from the peer in this session: an update repeats the candidates sent
// before. At most maxRemoteCandidates are taken per session, so a peer
// cannot make the agent pair and check without bound by sending updates.
func (s *session) addSignalled(cands []string, peer nodekey.Public) (added int) {
	if s.remoteSeen == nil {
		s.remoteSeen = make(map[string]struct{}, len(cands))
	}
	var fresh []string
	for _, c := range cands {
		if _, ok := s.remoteSeen[c]; ok || len(s.remoteSeen) >= maxRemoteCandidates {
			continue
		}
		s.remoteSeen[c] = struct{}{}
		fresh = append(fresh, c)
	}
	if len(fresh) == 0 {
		return 0
	}
	return s.addRemote(fresh, peer)
}

// sessionView is a consistent snapshot of what pion reported.
type sessionView struct {
	gathered bool
	state    ice.ConnectionState
	selected bool
}

func (s *session) view() sessionView {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sessionView{gathered: s.gathered, state: s.state, selected: s.selected}
}

// dead reports whether ICE gave up on this session.
func (v sessionView) dead() bool {
	return v.state == ice.ConnectionStateFailed || v.state == ice.ConnectionStateClosed
}

// candidates returns the local candidates to signal: the port-mapped one
// (mapped.go) and server-reflexive ones first (they get through NATs),
// then host ones, IPv6 and IPv4 alternating (RFC 8421 section 4: so that
// the cap keeps both families on a host with many IPv6 addresses),
// loopback last, at most maxCandidates.
func (s *session) candidates() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	if m := s.t.mapped.Load(); m != nil {
		out = append(out, *m)
	}
	out = append(out, s.srflx...)
	var v6, v4, loop []string
	for _, h := range s.hosts {
		switch a := candidateAddr(h); {
		case a.IsLoopback():
			loop = append(loop, h)
		case a.Is6():
			v6 = append(v6, h)
		default:
			v4 = append(v4, h)
		}
	}
	for i := 0; i < max(len(v6), len(v4)); i++ {
		if i < len(v6) {
			out = append(out, v6[i])
		}
		if i < len(v4) {
			out = append(out, v4[i])
		}
	}
	out = append(out, loop...)
	if len(out) > maxCandidates {
		out = out[:maxCandidates]
	}
	return out
}

// candidateAddr is the address of a marshalled candidate, or the zero Addr.
func candidateAddr(m string) netip.Addr {
	c, err := ice.UnmarshalCandidate(m)
	if err != nil {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(c.Address())
	return a
}

// addRemote gives the agent the peer's candidates, skipping what this
// transport cannot use (TCP, relayed, a family the socket does not reach,
// unparsable) and what it must not send to (candidates.go), each ranked by
// this node's rule (ranked, in prefer.go).
func (s *session) addRemote(cands []string, peer nodekey.Public) (added int) {
	var same, asked bool
	sameHost := func() bool {
		if !asked {
			same, asked = s.t.sameHost(peer), true
		}
		return same
	}
	var use []ice.Candidate
	for _, m := range cands {
		c, err := ice.UnmarshalCandidate(m)
		if err != nil || !c.NetworkType().IsUDP() || c.Component() != ice.ComponentRTP {
			continue
		}
		switch c.Type() {
		case ice.CandidateTypeHost, ice.CandidateTypeServerReflexive, ice.CandidateTypePeerReflexive:
		default:
			continue
		}
		a, err := netip.ParseAddr(c.Address())
		if err != nil {
			continue
		}
		if why := s.t.refuseRemote(a, sameHost); why != "" {
			s.t.stats.dropCandidate.Add(1)
			s.t.log.Debug("direct: ignoring a peer's candidate", "peer", peer.ShortString(), "addr", a, "why", why)
			continue
		}
		if c, err = ranked(c, a); err != nil {
			continue
		}
		use = append(use, c)
	}
	for _, c := range use {
		if s.agent.AddRemoteCandidate(c) == nil {
			added++
		}
	}
	return added
}

// selectedRemote returns the peer's address on the selected pair and the
// pair's latest round-trip time.
func (s *session) selectedRemote() (netip.AddrPort, time.Duration, bool) {
	pair, err := s.agent.GetSelectedCandidatePair()
	if err != nil || pair == nil || pair.Remote == nil {
		return netip.AddrPort{}, 0, false
	}
	a, err := netip.ParseAddr(pair.Remote.Address())
	if err != nil || pair.Remote.Port() <= 0 || pair.Remote.Port() > 65535 {
		return netip.AddrPort{}, 0, false
	}
	// The pair returned above is a copy without statistics.
	var rtt time.Duration
	if st, ok := s.agent.GetSelectedCandidatePairStats(); ok {
		rtt = time.Duration(st.CurrentRoundTripTime * float64(time.Second))
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(pair.Remote.Port())), rtt, true
}

func (s *session) close() {
	s.early.Stop()
	s.agent.Close()
}

// withoutRelated returns the marshalled server-reflexive candidate c (at
// address a) with its related address withheld (unspecified, which pion
// leaves out of the candidate line). The related address is the local address the STUN request left
// from; peers have no use for it (RFC 8445 section 5.1.1.2 lets it be
// withheld for privacy), and pion pairs every local address with every
// STUN server, so it would name loopback and link-local addresses (an
// EUI-64 link-local one spells out the interface's MAC address), and one
// public address would be offered once per local address, crowding host
// candidates out of the maxCandidates a signal carries.
func withoutRelated(c ice.Candidate, a netip.Addr) (string, bool) {
	rel := netip.IPv4Unspecified()
	if a.Is6() {
		rel = netip.IPv6Unspecified()
	}
	s, err := ice.NewCandidateServerReflexive(&ice.CandidateServerReflexiveConfig{
		Network: "udp", Address: a.String(), Port: c.Port(), Component: c.Component(),
		Priority: c.Priority(), Foundation: c.Foundation(), RelAddr: rel.String(), RelPort: 0,
	})
	if err != nil {
		return "", false
	}
	m := s.Marshal()
	return m, len(m) <= maxCandidateLen
}
