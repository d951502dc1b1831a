package direct

import (
	"errors"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/testkit"
)

// TestRestartMakesFreshSessions: after Restart on either side (the
// controlling and the controlled one), the path is re-established by a new
// ICE session, not left on the old one.
func TestRestartMakesFreshSessions(t *testing.T) {
	a, b := connectedPair(t)
	ka, kb := a.cfg.PrivateKey, b.cfg.PrivateKey

	// Since moves when the state does: a path that went connecting and
	// came back direct is a new session's.
	redone := func(tr *Transport, peer *Transport, after time.Time) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			pi, _ := tr.PathInfo(peer.self)
			if pi.State == StateDirect && pi.Since.After(after) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: path to %s %v since %v; want a new direct path after %v",
					tr.self.ShortString(), peer.self.ShortString(), pi.State, pi.Since, after)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, mover := range []*Transport{a, b} {
		pa, _ := a.PathInfo(kb.Public())
		pb, _ := b.PathInfo(ka.Public())
		if err := mover.Restart("test"); err != nil {
			t.Fatalf("Restart: %v", err)
		}
		redone(a, b, pa.Since)
		redone(b, a, pb.Since)
	}

	a.Close()
	if err := a.Restart("after close"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Restart after Close: %v, want ErrClosed", err)
	}
}

// connectedPair makes two loopback transports that are peers of each other
// and waits until each has a direct path to the other.
func connectedPair(t *testing.T) (a, b *Transport) {
	t.Helper()
	n := newSignalNet()
	a = newLoopback(t, n, testkit.Key(t), nil)
	b = newLoopback(t, n, testkit.Key(t), nil)
	a.AddPeer(b.self)
	b.AddPeer(a.self)
	waitState(t, a, b.self, StateDirect, 20*time.Second)
	waitState(t, b, a.self, StateDirect, 20*time.Second)
	return a, b
}
