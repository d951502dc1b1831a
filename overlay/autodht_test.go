package overlay

import (
	"testing"
	"time"

	"github.com/plures/plurenet/discovery/dht/dhttest"
	"github.com/plures/plurenet/internal/nodekey"
)

// TestAutoDHTRelayDown: in auto mode with the DHT, alpha and beta meet on
// the relay; the relay dies; gamma, started while no relay is up, finds
// both through the DHT and talks to them over DHT-found direct paths
// (path-checked static paths, as in swarm mode), and alpha and beta keep
// hearing each other's announcements (over UDP now), so neither times the
// other out. When the relay is back,
// every member is on it again and the DHT-found paths are dropped, and
// traffic still flows.
func TestAutoDHTRelayDown(t *testing.T) {
	boot := dhttest.Private(t, 8)
	r := startRelay(t, "")
	opts := nodeOpts{auto: true, dht: boot}
	a := startNode(t, "alpha", []string{r.URL}, opts)
	b := startNode(t, "beta", []string{r.URL}, opts)
	serveEcho(t, a, 7400)
	serveEcho(t, b, 7400)
	exchange(t, a, waitMember(t, a, "beta"), 7400, "beta")
	if st := a.Status(); st.DHT == nil || st.Transport != TransportAuto {
		t.Fatalf("alpha in auto mode with the DHT: transport %q, DHT status %+v", st.Transport, st.DHT)
	}

	r.Stop()
	for _, n := range []*Node{a, b} {
		waitFor(t, n.cfg.Name+"'s relay to be down", func() bool { return !n.Status().Relays[0].Connected })
	}
	down := time.Now()
	g := startNode(t, "gamma", []string{r.URL}, opts)
	serveEcho(t, g, 7400)
	for _, pair := range [][2]*Node{{g, a}, {g, b}, {a, g}, {b, g}} {
		exchange(t, pair[0], waitMember(t, pair[0], pair[1].cfg.Name), 7400, pair[1].cfg.Name)
	}
	for _, pair := range [][2]*Node{{g, a}, {a, g}} {
		m, ok := memberNamed(pair[0].Status(), pair[1].cfg.Name)
		if !ok || m.Path != "direct" || m.Direct == nil || m.Direct.State != "direct" {
			t.Fatalf("%s's view of %s with every relay down: %+v", pair[0].cfg.Name, pair[1].cfg.Name, m)
		}
		if _, usable, ok := pair[0].direct.StaticAddr(pair[1].pub); !ok || !usable {
			t.Fatalf("%s has no usable DHT-found path to %s", pair[0].cfg.Name, pair[1].cfg.Name)
		}
	}
	if st := g.Status(); st.DHT == nil || st.DHT.Found == 0 {
		t.Fatalf("gamma's DHT status: %+v", st.DHT)
	}
	// With the relay still down, alpha and beta still hear each other's
	// announcements (over UDP now), so neither times the other out.
	for _, pair := range [][2]*Node{{a, b}, {b, a}} {
		waitFor(t, pair[0].cfg.Name+" to hear "+pair[1].cfg.Name+" with the relay down", func() bool {
			m, ok := memberNamed(pair[0].Status(), pair[1].cfg.Name)
			return ok && m.LastSeen.After(down)
		})
	}
	exchange(t, a, waitMember(t, a, "beta"), 7400, "beta")

	startRelay(t, r.addr)
	for _, n := range []*Node{a, b, g} {
		if !waitRelayConnected(t, n) {
			t.Fatalf("%s did not reconnect to the relay", n.cfg.Name)
		}
	}
	for _, pair := range [][2]*Node{{g, a}, {a, g}, {a, b}} {
		waitFor(t, pair[0].cfg.Name+" to drop its DHT-found path to "+pair[1].cfg.Name, func() bool {
			return !hasStatic(pair[0], pair[1].pub)
		})
		exchange(t, pair[0], waitMember(t, pair[0], pair[1].cfg.Name), 7400, pair[1].cfg.Name)
	}
}

// memberNamed is st's view of the member called name.
func memberNamed(st Status, name string) (MemberStatus, bool) {
	for _, m := range st.Members {
		if m.Name == name {
			return m, true
		}
	}
	return MemberStatus{}, false
}

func hasStatic(n *Node, peer nodekey.Public) bool {
	_, _, ok := n.direct.StaticAddr(peer)
	return ok
}

// waitFor polls cond until it holds, failing t after testTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within %v", what, testTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
