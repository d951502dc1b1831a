package direct

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/stun/v4"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/testkit"
)

// TestMappedCandidate: with a port mapping set, the offer or answer a node
// signals lists the mapped address first, as a server-reflexive candidate
// on the mapped port; withdrawn, or inside the mesh's own prefixes, it is
// not offered.
func TestMappedCandidate(t *testing.T) {
	ext := netip.MustParseAddrPort("198.51.100.7:40000")
	tests := []struct {
		name    string
		set     netip.AddrPort
		exclude []netip.Prefix
		clear   bool
		want    bool
	}{
		{"offered", ext, nil, false, true},
		{"withdrawn", ext, nil, true, false},
		{"inside the mesh", ext, []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, false, false},
		{"ipv6", netip.MustParseAddrPort("[2001:db8::7]:40000"), nil, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newSignalNet()
			ka, kb := testkit.Key(t), testkit.Key(t)
			var (
				mu    sync.Mutex
				cands []string
				got   = make(chan struct{})
			)
			n.drop = func(from, to nodekey.Public, msg []byte) bool {
				s, err := parseSignal(msg)
				if err != nil || from != ka.Public() || (s.Type != sigOffer && s.Type != sigAnswer) {
					return false
				}
				mu.Lock()
				defer mu.Unlock()
				if cands == nil {
					cands = append([]string{}, s.Candidates...)
					close(got)
				}
				return false
			}
			a := newLoopback(t, n, ka, func(c *Config) { c.ExcludePrefixes = tt.exclude })
			b := newLoopback(t, n, kb, nil)
			a.SetMapped(tt.set, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), a.LocalAddr().Port()))
			if tt.clear {
				a.SetMapped(netip.AddrPort{}, netip.AddrPort{})
			}
			a.AddPeer(kb.Public())
			b.AddPeer(ka.Public())
			select {
			case <-got:
			case <-time.After(20 * time.Second):
				t.Fatal("a signalled no candidates")
			}
			mu.Lock()
			defer mu.Unlock()
			var first ice.Candidate
			if len(cands) > 0 {
				first, _ = ice.UnmarshalCandidate(cands[0])
			}
			isMapped := first != nil && first.Type() == ice.CandidateTypeServerReflexive &&
				first.Address() == tt.set.Addr().String() && first.Port() == int(tt.set.Port())
			if isMapped != tt.want {
				t.Fatalf("candidates %q: mapped %s first = %v, want %v", cands, tt.set, isMapped, tt.want)
			}
			for _, c := range cands[1:] {
				if cc, err := ice.UnmarshalCandidate(c); err == nil && cc.Port() == int(tt.set.Port()) && cc.Address() == tt.set.Addr().String() {
					t.Fatalf("mapped candidate listed twice: %q", cands)
				}
			}
		})
	}
}

// TestStrangerGetsNothing: what anyone on the internet can send to a
// port-mapped socket (docs/security.md "Port mapping"). A STUN binding
// request that names no live ICE session, a WireGuard message from an
// address with no validated path, a sealed mesh message (auto mode reads
// none) and garbage are all dropped: nothing is answered and nothing
// reaches WireGuard.
func TestStrangerGetsNothing(t *testing.T) {
	n := newSignalNet()
	ka, kb := testkit.Key(t), testkit.Key(t)
	delivered := make(chan nodekey.Public, 10)
	a := newLoopback(t, n, ka, nil)
	b := newLoopback(t, n, kb, func(c *Config) {
		c.Deliver = func(from nodekey.Public, pkt []byte) { delivered <- from }
	})
	a.AddPeer(kb.Public())
	b.AddPeer(ka.Public()) // a live session, whose credentials the stranger lacks
	waitState(t, b, ka.Public(), StateDirect, 20*time.Second)

	stranger, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(b.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	before := b.Stats()
	wgInit := make([]byte, 148)
	wgInit[0] = 1
	sealed := make([]byte, 64)
	sealed[0] = mesh.SealedHeader
	for _, d := range [][]byte{
		stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("nosuchufrag:guess"), stun.Fingerprint).Raw,
		stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw,
		wgInit,
		sealed,
		[]byte("GET / HTTP/1.1\r\n\r\n"),
	} {
		if _, err := stranger.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := b.Stats()
		if st.STUNIn-before.STUNIn >= 2 && st.DropsUnknownSrc-before.DropsUnknownSrc >= 1 && st.DropsOther-before.DropsOther >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stranger's datagrams were not all read and classified: before %+v, after %+v", before, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Everything has been read and handled: any answer is on its way.
	_ = stranger.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	if n, err := stranger.Read(buf); err == nil {
		t.Fatalf("the stranger got an answer: % x", buf[:n])
	}
	select {
	case k := <-delivered:
		t.Fatalf("a stranger's WireGuard message reached WireGuard as %s", k.ShortString())
	default:
	}
}

// TestMappedRestartsSessions: a port mapping that appears while an ICE
// attempt is under way is used at once. The test's signaling strips every
// host candidate, so the only way a path can form is the mapped candidate
// (here the mapped side's own socket, as a host with a public address
// would map). The mapping is set once the first sessions have exchanged
// their (empty) offer and answer; the mapped side, controlling or
// controlled, must start a fresh session that offers it, and the pair goes
// direct without the first attempt ever failing. Without the restart the
// mapping would reach the peer only in the next attempt, after the first
// timed out and backed off (state lost).
func TestMappedRestartsSessions(t *testing.T) {
	for _, mappedCtrl := range []bool{true, false} {
		name := "controlled side mapped"
		if mappedCtrl {
			name = "controlling side mapped"
		}
		t.Run(name, func(t *testing.T) {
			n := newSignalNet()
			var (
				mu       sync.Mutex
				answered bool // an answer went through before the mapping
			)
			n.drop = func(from, to nodekey.Public, msg []byte) bool {
				s, err := parseSignal(msg)
				if err != nil || (s.Type != sigOffer && s.Type != sigAnswer) {
					return false
				}
				var keep []string
				for _, c := range s.Candidates {
					if cc, err := ice.UnmarshalCandidate(c); err == nil && cc.Type() != ice.CandidateTypeHost {
						keep = append(keep, c)
					}
				}
				s.Candidates = keep
				b, err := appendSignal(nil, &s)
				if err != nil {
					t.Errorf("re-encoding a signal: %v", err)
					return true
				}
				n.mu.Lock()
				dst := n.byK[to]
				n.mu.Unlock()
				if s.Type == sigAnswer {
					mu.Lock()
					answered = true
					mu.Unlock()
				}
				if dst != nil {
					_ = dst.HandleSignal(from, b)
				}
				return true
			}
			kc, kd := orderKeys(t)
			c, d := newLoopback(t, n, kc, nil), newLoopback(t, n, kd, nil)
			mapped, other := d, c
			if mappedCtrl {
				mapped, other = c, d
			}
			c.AddPeer(kd.Public())
			d.AddPeer(kc.Public())
			for deadline := time.Now().Add(connectTimeout / 2); ; {
				mu.Lock()
				ok := answered
				mu.Unlock()
				if ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the first session's offer and answer were not exchanged")
				}
				time.Sleep(10 * time.Millisecond)
			}
			if pi, _ := mapped.PathInfo(other.self); pi.State != StateConnecting {
				t.Fatalf("before the mapping: path %v, want %v (no candidates, no path)", pi.State, StateConnecting)
			}

			mapped.SetMapped(mapped.LocalAddr(), mapped.LocalAddr())
			deadline := time.Now().Add(3 * connectTimeout)
			for {
				pm, _ := mapped.PathInfo(other.self)
				po, _ := other.PathInfo(mapped.self)
				if pm.State == StateLost || po.State == StateLost {
					t.Fatalf("an attempt failed after the mapping appeared (mapped side %v, other %v): "+
						"the mapped candidate waited for the next attempt", pm.State, po.State)
				}
				if pm.State == StateDirect && po.State == StateDirect {
					if po.Remote != mapped.LocalAddr() {
						t.Fatalf("the other side reaches the mapped one at %v, want the mapped address %v", po.Remote, mapped.LocalAddr())
					}
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("not direct after the mapping: mapped side %v, other %v", pm.State, po.State)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}
