package direct

import (
	"fmt"
	"net/netip"
	"sort"
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
	answered    bool   // controlling: the answer arrived and checks started
	answerSent  bool   // controlled: the answer for the latest offer went out
	remoteUfrag string // the peer's ICE credentials, from its offer or answer
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
	agent, err := ice.NewAgentWithOptions(
		ice.WithNet(t.inet),
		ice.WithUDPMux(t.mux),
		ice.WithUDPMuxSrflx(t.mux),
		ice.WithUrls(t.urls),
		ice.WithNetworkTypes([]ice.NetworkType{ice.NetworkTypeUDP4}),
		ice.WithCandidateTypes(types),
		ice.WithMulticastDNSMode(ice.MulticastDNSModeDisabled),
		ice.WithKeepaliveInterval(KeepaliveInterval),
		ice.WithDisconnectedTimeout(LossTimeout),
		ice.WithFailedTimeout(connectTimeout-LossTimeout),
		ice.WithSTUNGatherTimeout(stunGatherTimeout),
		ice.WithLoggerFactory(pionLogger{log: t.log}),
	)
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
		} else if a, err := netip.ParseAddr(c.Address()); err == nil && t.excluded(a) {
			// An overlay address (a kernel TUN's): never a path.
		} else if m := c.Marshal(); len(m) <= maxCandidateLen {
			if c.Type() == ice.CandidateTypeServerReflexive {
				s.srflx = append(s.srflx, m)
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
	return s, nil
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
// then host ones, loopback last, at most maxCandidates.
func (s *session) candidates() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	if m := s.t.mapped.Load(); m != nil {
		out = append(out, *m)
	}
	out = append(out, s.srflx...)
	hosts := append([]string(nil), s.hosts...)
	sort.SliceStable(hosts, func(i, j int) bool {
		return !isLoopbackCandidate(hosts[i]) && isLoopbackCandidate(hosts[j])
	})
	out = append(out, hosts...)
	if len(out) > maxCandidates {
		out = out[:maxCandidates]
	}
	return out
}

func isLoopbackCandidate(m string) bool {
	c, err := ice.UnmarshalCandidate(m)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(c.Address())
	return err == nil && a.IsLoopback()
}

// addRemote gives the agent the peer's candidates, skipping what this
// transport cannot use (TCP, relayed, IPv6, unparsable) and what it must
// not send to (candidates.go).
func (s *session) addRemote(cands []string, peer nodekey.Public) (added int) {
	var same, asked bool
	sameHost := func() bool {
		if !asked {
			same, asked = s.t.sameHost(peer), true
		}
		return same
	}
	for _, m := range cands {
		c, err := ice.UnmarshalCandidate(m)
		if err != nil || c.NetworkType() != ice.NetworkTypeUDP4 {
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

func (s *session) close() { s.agent.Close() }
