package overlay

import (
	"testing"
	"time"

	"github.com/plures/plurenet/discovery/dht/dhttest"
)

// TestSwarmDHT: on a private DHT, alpha and beta find each other with no
// relay, no static peer and no LAN discovery, and talk over the direct
// path; status says they met through the DHT. Gamma, not on the DHT and
// knowing only alpha, is introduced by alpha to beta (forwarded
// announcements), which never looked it up. Delta, with another secret,
// meets nobody.
func TestSwarmDHT(t *testing.T) {
	boot := dhttest.Private(t, 8)
	a := startSwarmNode(t, "alpha", swarmOpts{dht: boot})
	b := startSwarmNode(t, "beta", swarmOpts{dht: boot})
	d := startSwarmNode(t, "delta", swarmOpts{dht: boot, secret: "another secret"})
	talkDirect(t, a, b, 7300)
	// The first to look up may have found nobody yet (the other was met
	// because it found this one); its next lookup finds the other.
	for _, n := range []*Node{a, b} {
		deadline := time.Now().Add(testTimeout)
		for {
			st := n.Status()
			if st.DHT == nil || st.DHT.RoutingTable == 0 || st.DHT.LastAnnounce.IsZero() {
				t.Fatalf("%s: DHT status %+v", st.Name, st.DHT)
			}
			if st.DHT.MembersFound == 1 && len(st.Members) == 1 && st.Members[0].Via == viaDHT {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: DHT status %+v, members %+v: want the other met via the DHT", st.Name, st.DHT, st.Members)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	g := startSwarmNode(t, "gamma", swarmOpts{peers: []string{a.direct.LocalAddr().String()}})
	waitMember(t, b, "gamma")
	waitMember(t, g, "beta")
	// Gamma knew only alpha's address: beta came to it by introduction.
	// (Beta may hear gamma's announcement before alpha's introduction of
	// gamma arrives, so its own view may say "direct".)
	for _, m := range g.Status().Members {
		if m.Name == "beta" && m.Via != viaForward {
			t.Fatalf("gamma met beta via %q, want %q", m.Via, viaForward)
		}
	}
	if st := g.Status(); st.DHT != nil {
		t.Fatalf("gamma has the DHT off but status shows %+v", st.DHT)
	}
	for _, n := range []*Node{a, b, g} {
		for _, m := range n.Status().Members {
			if m.Name == "delta" {
				t.Fatalf("%s lists delta (another secret) as a member", n.cfg.Name)
			}
		}
	}
	if ms := d.Status().Members; len(ms) != 0 {
		t.Fatalf("delta (another secret) lists members %+v", ms)
	}
}
