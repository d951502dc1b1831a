package direct

import "testing"

func TestDirectConnectsOnLoopback(t *testing.T) {
	a, b := connectedPair(t)
	pa, _ := a.PathInfo(b.self)
	pb, _ := b.PathInfo(a.self)
	if pa.Remote != b.LocalAddr() || pb.Remote != a.LocalAddr() {
		t.Fatalf("remotes %v %v, want %v %v", pa.Remote, pb.Remote, b.LocalAddr(), a.LocalAddr())
	}
	if !a.Reachable(b.self) || !b.Reachable(a.self) {
		t.Fatal("direct but not reachable")
	}
}
