package overlay

import (
	"context"
	"slices"
	"testing"
	"time"
)

// firstContactJoins is how many joins TestFirstContact measures: enough
// for a one-in-ten stall to show in the worst case.
const firstContactJoins = 50

// TestFirstContact starts pairs of auto-mode nodes, one pair after another,
// and pings from the moment both have seen the other join: every ping must
// be answered (a lost WireGuard handshake is retried, not given up). The
// time from the join to the reply is logged, not asserted (make bench
// reports it): a lost first handshake shows as a ~5 s worst case.
func TestFirstContact(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 100 nodes")
	}
	r := startRelay(t, "")
	took := make([]time.Duration, 0, firstContactJoins)
	for i := range firstContactJoins {
		a := startNode(t, "alpha", []string{r.URL}, nodeOpts{auto: true})
		b := startNode(t, "beta", []string{r.URL}, nodeOpts{auto: true})
		joined := waitJoined(t, a, b)
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		_, err := a.WaitMember(ctx, "beta")
		var res PingResult
		if err == nil {
			res, err = a.Ping(ctx, "beta")
		}
		cancel()
		if err != nil {
			t.Fatalf("join %d: first ping: %v", i, err)
		}
		d := time.Since(joined)
		took = append(took, d)
		t.Logf("join %d: first ping reply %v after the join, via %s", i, d.Round(time.Millisecond), res.Path)
		a.Close()
		b.Close()
	}
	slices.Sort(took)
	t.Logf("first contact over %d joins: median %v, worst %v", len(took),
		took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
}

// waitJoined returns when both nodes list each other as members.
func waitJoined(t *testing.T, a, b *Node) time.Time {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		if len(a.members.List()) > 0 && len(b.members.List()) > 0 {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s and %s never saw each other join", a.cfg.Name, b.cfg.Name)
		}
		time.Sleep(time.Millisecond)
	}
}
