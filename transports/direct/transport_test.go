package direct

import (
	"testing"
	"time"
)

func TestDirectConnectsOnLoopback(t *testing.T) {
	n := newSignalNet()
	ka, kb := newKey(t), newKey(t)
	a := newLoopback(t, n, ka, nil)
	b := newLoopback(t, n, kb, nil)
	a.AddPeer(kb.Public())
	b.AddPeer(ka.Public())
	pa := waitState(t, a, kb.Public(), StateDirect, 20*time.Second)
	pb := waitState(t, b, ka.Public(), StateDirect, 20*time.Second)
	if pa.Remote != b.LocalAddr() || pb.Remote != a.LocalAddr() {
		t.Fatalf("remotes %v %v, want %v %v", pa.Remote, pb.Remote, b.LocalAddr(), a.LocalAddr())
	}
	if !a.Reachable(kb.Public()) || !b.Reachable(ka.Public()) {
		t.Fatal("direct but not reachable")
	}
}
