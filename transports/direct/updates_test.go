package direct

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/stuntest"
	"github.com/plures/plurenet/internal/testkit"
)

// signalLog records the signals a signalNet carries, in order.
type signalLog struct {
	t    *testing.T
	mu   sync.Mutex
	sigs []loggedSignal
}

type loggedSignal struct {
	from nodekey.Public
	s    signal
}

// drop is a signalNet.drop that keeps every signal and logs it.
func (l *signalLog) drop(from, _ nodekey.Public, msg []byte) bool {
	s, err := parseSignal(msg)
	if err != nil {
		l.t.Errorf("sent an unparsable signal: %v", err)
		return true
	}
	l.mu.Lock()
	l.sigs = append(l.sigs, loggedSignal{from, s})
	l.mu.Unlock()
	return false
}

// of returns the signals of type typ from from, oldest first.
func (l *signalLog) of(from nodekey.Public, typ signalType) []signal {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []signal
	for _, ls := range l.sigs {
		if ls.from == from && ls.s.Type == typ {
			out = append(out, ls.s)
		}
	}
	return out
}

// srflx returns the server-reflexive candidates among cands.
func srflx(cands []string) []string {
	var out []string
	for _, c := range cands {
		if strings.Contains(c, "typ srflx") {
			out = append(out, c)
		}
	}
	return out
}

// breakHosts is a signalNet.rewrite that points every host candidate of an
// offer or answer at port 9 of its address, where nothing answers: only a
// server-reflexive candidate can then make the path.
func breakHosts(t *testing.T) func(_, _ nodekey.Public, msg []byte) []byte {
	return func(_, _ nodekey.Public, msg []byte) []byte {
		s, err := parseSignal(msg)
		if err != nil || (s.Type != sigOffer && s.Type != sigAnswer) {
			return msg
		}
		for i, m := range s.Candidates {
			c, err := ice.UnmarshalCandidate(m)
			if err != nil || c.Type() != ice.CandidateTypeHost {
				continue
			}
			h, err := ice.NewCandidateHost(&ice.CandidateHostConfig{
				Network: "udp", Address: c.Address(), Port: 9, Component: c.Component(),
				Priority: c.Priority(), Foundation: c.Foundation(),
			})
			if err != nil {
				t.Errorf("rewriting %q: %v", m, err)
				continue
			}
			s.Candidates[i] = h.Marshal()
		}
		out, err := appendSignal(nil, &s)
		if err != nil {
			t.Errorf("re-encoding a signal: %v", err)
			return msg
		}
		return out
	}
}

// TestCandidateUpdates: while both members' STUN servers hold their
// answers, the offer and the answer go out with host candidates; the
// server-reflexive candidates follow in updates once STUN answers, and
// each side takes the other's. Host candidates are broken on the way, so
// the path can only be made over the candidates the updates carried.
func TestCandidateUpdates(t *testing.T) {
	ka, kb := orderKeys(t)
	stunA, releaseA := stuntest.Held(t, netip.AddrPort{})
	stunB, releaseB := stuntest.Held(t, netip.AddrPort{})
	n := newSignalNet()
	log := &signalLog{t: t}
	n.drop, n.rewrite = log.drop, breakHosts(t)
	a := newLoopback(t, n, ka, func(c *Config) { c.STUNServers = []string{stunA} })
	b := newLoopback(t, n, kb, func(c *Config) { c.STUNServers = []string{stunB} })
	a.AddPeer(kb.Public())
	b.AddPeer(ka.Public())

	// STUN has not answered, and gathering waits stunGatherTimeout for
	// it: an offer and an answer before that are early ones.
	testkit.EventuallyWithin(t, stunGatherTimeout, "an offer and an answer while STUN holds its answers",
		func() bool { return len(log.of(ka.Public(), sigOffer)) > 0 && len(log.of(kb.Public(), sigAnswer)) > 0 })
	releaseA()
	releaseB()
	offer, answer := log.of(ka.Public(), sigOffer)[0], log.of(kb.Public(), sigAnswer)[0]
	for _, s := range []signal{offer, answer} {
		if len(s.Candidates) == 0 || len(srflx(s.Candidates)) != 0 {
			t.Errorf("first %v: candidates %q, want host ones only", s.Type, s.Candidates)
		}
		if s.Flags&flagUpdates == 0 {
			t.Errorf("first %v: flags %#x, want flagUpdates", s.Type, s.Flags)
		}
	}

	waitState(t, a, kb.Public(), StateDirect, 30*time.Second)
	waitState(t, b, ka.Public(), StateDirect, 30*time.Second)
	offers, answers := log.of(ka.Public(), sigOffer), log.of(kb.Public(), sigAnswer)
	if len(srflx(offers[len(offers)-1].Candidates)) == 0 || len(srflx(answers[len(answers)-1].Candidates)) == 0 {
		t.Fatalf("no update carried a server-reflexive candidate: offers %+v, answers %+v", offers, answers)
	}
	if ua, ub := a.Stats().CandidateUpdates, b.Stats().CandidateUpdates; ua == 0 || ub == 0 {
		t.Fatalf("candidates taken from updates: controlling %d, controlled %d; want both", ua, ub)
	}
}

// TestCandidateUpdatesOlderPeer: with a member that does not take updates
// (code from before them) neither side sends early: the offer and the
// answer wait for gathering, and so carry the server-reflexive candidates,
// as before updates. Either side may be the older one.
func TestCandidateUpdatesOlderPeer(t *testing.T) {
	for _, olderCtrl := range []bool{false, true} {
		name := "older controlled"
		if olderCtrl {
			name = "older controlling"
		}
		t.Run(name, func(t *testing.T) {
			ka, kb := orderKeys(t)
			stunA, releaseA := stuntest.Held(t, netip.AddrPort{})
			stunB, releaseB := stuntest.Held(t, netip.AddrPort{})
			n := newSignalNet()
			log := &signalLog{t: t}
			n.drop = log.drop
			a := newLoopback(t, n, ka, func(c *Config) { c.STUNServers = []string{stunA} })
			b := newLoopback(t, n, kb, func(c *Config) { c.STUNServers = []string{stunB} })
			older := b
			if olderCtrl {
				older = a
			}
			older.noUpdates = true // before AddPeer starts the state machines
			a.AddPeer(kb.Public())
			b.AddPeer(ka.Public())

			// Gathering cannot end before stunGatherTimeout while STUN
			// holds its answers; only an early offer could go out now.
			time.Sleep(earlyCandidates + 4*tickInterval)
			if o, an := log.of(ka.Public(), sigOffer), log.of(kb.Public(), sigAnswer); len(o) != 0 || len(an) != 0 {
				t.Fatalf("offers %+v and answers %+v went out before gathering ended", o, an)
			}
			releaseA()
			releaseB()
			waitState(t, a, kb.Public(), StateDirect, 30*time.Second)
			waitState(t, b, ka.Public(), StateDirect, 30*time.Second)
			for _, s := range []signal{log.of(ka.Public(), sigOffer)[0], log.of(kb.Public(), sigAnswer)[0]} {
				if len(srflx(s.Candidates)) == 0 {
					t.Errorf("first %v: candidates %q, want a server-reflexive one", s.Type, s.Candidates)
				}
			}
			for _, typ := range []signalType{sigOffer, sigAnswer, sigRequest} {
				for _, s := range log.of(older.self, typ) {
					if s.Flags != 0 {
						t.Errorf("the older member sent a %v with flags %#x", typ, s.Flags)
					}
				}
			}
			if ua, ub := a.Stats().CandidateUpdates, b.Stats().CandidateUpdates; ua != 0 || ub != 0 {
				t.Fatalf("candidates taken from updates: %d and %d, want none", ua, ub)
			}
		})
	}
}

// TestCandidateUpdatesBound: a session takes at most maxRemoteCandidates
// of its peer's candidates over all its signals, and a candidate it has
// already taken again adds nothing.
func TestCandidateUpdatesBound(t *testing.T) {
	tr := newLoopback(t, newSignalNet(), testkit.Key(t), nil)
	s, err := tr.newSession(1, true, func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	peer := testkit.Key(t).Public()
	var cands []string
	for i := range maxRemoteCandidates + 8 {
		cands = append(cands, hostCandidate(t, fmt.Sprintf("10.1.0.%d", i+1), 41641))
	}
	total := 0
	for i := 0; i < len(cands); i += maxCandidates {
		signal := cands[i:min(i+maxCandidates, len(cands))]
		total += s.addSignalled(signal, peer)
		if again := s.addSignalled(signal, peer); again != 0 {
			t.Fatalf("the same %d candidates again added %d", len(signal), again)
		}
	}
	if total != maxRemoteCandidates {
		t.Fatalf("took %d of %d candidates, want %d", total, len(cands), maxRemoteCandidates)
	}
}
