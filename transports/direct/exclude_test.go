package direct

import (
	"net/netip"
	"testing"

	"github.com/pion/ice/v4"
	"github.com/plures/plurenet/internal/testkit"
)

// TestExcludedCandidates: addresses inside the mesh's own prefixes (a kernel
// TUN's overlay addresses) are never accepted as a peer's candidates, nor as
// a static path, so the direct path cannot run WireGuard inside its own
// tunnel.
func TestExcludedCandidates(t *testing.T) {
	n := newSignalNet()
	tr := newLoopback(t, n, testkit.Key(t), func(c *Config) {
		c.ExcludePrefixes = mustPrefixes(t, "100.64.0.0/10", "fd00::/8")
	})
	s, err := tr.newSession(1, true, func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	host := func(addr string) string {
		c, err := ice.NewCandidateHost(&ice.CandidateHostConfig{Network: "udp", Address: addr, Port: 40000, Component: 1})
		if err != nil {
			t.Fatal(err)
		}
		return c.Marshal()
	}
	tests := []struct {
		addr string
		want int
	}{
		{"100.78.186.46", 0}, // a peer's overlay IPv4
		{"100.64.0.1", 0},
		{"198.18.0.5", 1},
		{"100.128.0.1", 1}, // just outside 100.64.0.0/10
	}
	for _, tt := range tests {
		if got := s.addRemote([]string{host(tt.addr)}, testkit.Key(t).Public()); got != tt.want {
			t.Errorf("addRemote(%s) added %d, want %d", tt.addr, got, tt.want)
		}
	}
	if tr.excluded(netip.MustParseAddr("100.70.1.1")) != true || tr.excluded(netip.MustParseAddr("10.0.0.1")) != false {
		t.Fatal("excluded() disagrees with the prefixes")
	}
	peer := testkit.Key(t).Public()
	if err := tr.SetStatic(peer, mustAddrPort(t, "100.70.1.1:51898")); err == nil {
		t.Fatal("a static path inside the mesh prefix was accepted")
	}
}

func mustPrefixes(t *testing.T, ss ...string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	return netip.MustParseAddrPort(s)
}
