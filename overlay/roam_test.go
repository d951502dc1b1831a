package overlay

import (
	"context"
	"testing"
	"time"

	"github.com/plures/plurenet/netmon"
)

// TestResumeRenewsSessions: when netmon reports a wake from sleep, the node
// completes a new WireGuard handshake with its members at once, and traffic
// flows on the new session. Without the renewal nothing would handshake
// before wireguard-go's rekey timer (120 s after the first handshake,
// longer than this test waits), since no traffic goes unanswered here.
func TestResumeRenewsSessions(t *testing.T) {
	r := startRelay(t, "")
	a := startNode(t, "alpha", []string{r.URL}, nodeOpts{})
	b := startNode(t, "beta", []string{r.URL}, nodeOpts{})
	waitMember(t, a, "beta")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := a.Ping(ctx, "beta"); err != nil {
		t.Fatalf("ping before the sleep: %v", err)
	}
	before := a.wireguardPeers()[b.pub].lastHandshake
	if before.IsZero() {
		t.Fatal("no handshake with beta after a ping")
	}

	a.onNetChange(netmon.Event{Reason: netmon.ReasonResume, Slept: time.Hour})
	for {
		if last := a.wireguardPeers()[b.pub].lastHandshake; last.After(before) {
			t.Logf("a new handshake %v after the one before the wake", last.Sub(before).Round(time.Millisecond))
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no new WireGuard handshake with beta after the wake (last at %v)", before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := a.Ping(ctx, "beta"); err != nil {
		t.Fatalf("ping after the wake: %v", err)
	}
}
