package direct

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"

	"github.com/plures/plurenet/internal/nodekey"
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
			ka, kb := newKey(t), newKey(t)
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
