package dht

import (
	"net"
	"testing"
	"time"

	"github.com/anacrolix/dht/v2/krpc"
)

func TestPeerStoreBounds(t *testing.T) {
	s := NewPeerStore()
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }
	na := func(i int) krpc.NodeAddr {
		return krpc.NodeAddr{IP: net.IPv4(10, 0, byte(i>>8), byte(i)).To4(), Port: 1000 + i}
	}
	ih := [20]byte{1}
	// Two peers on one IP are two peers (the library's store kept one).
	s.AddPeer(ih, krpc.NodeAddr{IP: net.IPv4(192, 0, 2, 1).To4(), Port: 1})
	s.AddPeer(ih, krpc.NodeAddr{IP: net.IPv4(192, 0, 2, 1).To4(), Port: 2})
	got := s.GetPeers(ih)
	if len(got) != 2 || got[0].String() == got[1].String() {
		t.Fatalf("GetPeers = %v, want both ports of 192.0.2.1", got)
	}
	for i := range MaxPeersPerHash + 10 {
		now = now.Add(time.Second)
		s.AddPeer(ih, na(i))
	}
	if n := len(s.GetPeers(ih)); n != MaxPeersPerHash {
		t.Fatalf("%d peers for one hash, want the bound %d", n, MaxPeersPerHash)
	}
	for i := range MaxInfoHashes + 10 {
		s.AddPeer([20]byte{2, byte(i >> 8), byte(i)}, na(1))
	}
	if n := s.Len(); n != MaxInfoHashes {
		t.Fatalf("%d info-hashes, want the bound %d", n, MaxInfoHashes)
	}
	now = now.Add(PeerTTL + time.Second)
	if got := s.GetPeers(ih); len(got) != 0 {
		t.Fatalf("after PeerTTL: %v", got)
	}
}
