package direct

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/plures/plurenet/internal/testkit"
)

func hostCandidate(t *testing.T, addr string, port int) string {
	t.Helper()
	c, err := ice.NewCandidateHost(&ice.CandidateHostConfig{Network: "udp", Address: addr, Port: port, Component: 1})
	if err != nil {
		t.Fatal(err)
	}
	return c.Marshal()
}

func srflxCandidate(t *testing.T, addr string, port int) string {
	t.Helper()
	c, err := ice.NewCandidateServerReflexive(&ice.CandidateServerReflexiveConfig{
		Network: "udp", Address: addr, Port: port, Component: 1, RelAddr: "0.0.0.0", RelPort: 0})
	if err != nil {
		t.Fatal(err)
	}
	return c.Marshal()
}

// ownLANAddr is one of this host's own non-loopback IPv4 addresses, if it
// has one.
func ownLANAddr(tr *Transport) (netip.Addr, bool) {
	for a := range *tr.ownAddrs.Load() {
		if a.Is4() && !a.IsLoopback() && !a.IsLinkLocalUnicast() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// TestRemoteCandidatePolicy: a member elsewhere cannot make this node send
// STUN to this host's loopback, to link-local neighbours (the cloud
// metadata service), to this host's own addresses, or to unspecified,
// multicast and broadcast addresses; LAN and public candidates are used.
// A member on this host (its marker is here) may use loopback and this
// host's addresses, which is how two nodes on one machine connect.
func TestRemoteCandidatePolicy(t *testing.T) {
	n := newSignalNet()
	tr := newLoopback(t, n, testkit.Key(t), nil)
	s, err := tr.newSession(1, true, func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()

	type cand struct {
		name   string
		cand   string
		remote bool // used for a member elsewhere
		local  bool // used for a member on this host
	}
	cands := []cand{
		{"loopback", hostCandidate(t, "127.0.0.1", 53), false, true},
		{"loopback elsewhere in 127/8", hostCandidate(t, "127.0.0.53", 53), false, true},
		{"loopback as server-reflexive", srflxCandidate(t, "127.0.0.1", 6379), false, true},
		{"cloud metadata", hostCandidate(t, "169.254.169.254", 80), false, false},
		{"unspecified", hostCandidate(t, "0.0.0.0", 9), false, false},
		{"this network", hostCandidate(t, "0.1.2.3", 9), false, false},
		{"multicast", hostCandidate(t, "224.0.0.251", 5353), false, false},
		{"broadcast", hostCandidate(t, "255.255.255.255", 9), false, false},
		{"reserved", hostCandidate(t, "240.0.0.1", 9), false, false},
		{"a documentation address", hostCandidate(t, "203.0.113.9", 9), true, true},
		{"private LAN", hostCandidate(t, "192.168.77.5", 40000), true, true},
		{"public", srflxCandidate(t, "198.51.100.7", 40000), true, true},
	}
	if own, ok := ownLANAddr(tr); ok {
		cands = append(cands, cand{"this host's LAN address " + own.String(), hostCandidate(t, own.String(), 22), false, true})
	} else {
		t.Log("this host has no non-loopback IPv4 address: that case is not covered here")
	}

	elsewhere := testkit.Key(t).Public() // no Transport: its marker is nowhere
	local := newLoopback(t, n, testkit.Key(t), nil)
	if tr.sameHost(elsewhere) || !tr.sameHost(local.self) {
		t.Fatalf("sameHost: elsewhere %v, local %v; want false, true", tr.sameHost(elsewhere), tr.sameHost(local.self))
	}
	for _, c := range cands {
		if got := s.addRemote([]string{c.cand}, elsewhere); (got == 1) != c.remote {
			t.Errorf("%s from a member elsewhere: added %d, want used=%v", c.name, got, c.remote)
		}
		if got := s.addRemote([]string{c.cand}, local.self); (got == 1) != c.local {
			t.Errorf("%s from a member on this host: added %d, want used=%v", c.name, got, c.local)
		}
	}
	if tr.Stats().DropsCandidate == 0 {
		t.Error("refused candidates are not counted")
	}

	// The marker goes with its Transport.
	local.Close()
	if tr.sameHost(local.self) {
		t.Error("a closed Transport still counts as on this host")
	}
}

// TestSameHostPathStillForms: two members on one host reach each other
// over loopback candidates (their markers vouch for each other).
func TestSameHostPathStillForms(t *testing.T) {
	n := newSignalNet()
	a := newLoopback(t, n, testkit.Key(t), nil)
	b := newLoopback(t, n, testkit.Key(t), nil)
	a.AddPeer(b.self)
	b.AddPeer(a.self)
	waitState(t, a, b.self, StateDirect, 20*time.Second)
	if a.Stats().DropsCandidate != 0 || b.Stats().DropsCandidate != 0 {
		t.Fatalf("candidates refused between members on one host: %d, %d", a.Stats().DropsCandidate, b.Stats().DropsCandidate)
	}
}
