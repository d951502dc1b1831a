package dht

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/dht/v2/krpc"

	"github.com/plures/plurenet/discovery"
	"github.com/plures/plurenet/internal/mesh"
)

// privateDHTSize is the number of plain DHT nodes of the test's private
// DHT on loopback, as many as the lab's.
const privateDHTSize = 8

// findWait bounds two sources finding each other; it only keeps a broken
// run from hanging.
const findWait = 60 * time.Second

func listen(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// privateDHT starts n plain DHT nodes on loopback, each bootstrapping from
// the first, and returns their addresses.
func privateDHT(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for i := range n {
		c := listen(t)
		var boot []string
		if i > 0 {
			boot = addrs[:1]
		} else {
			boot = []string{} // the first knows nobody
		}
		srv, _, err := NewServer(c, ServerConfig{Bootstrap: boot, SendRate: 1000, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Close)
		if i > 0 {
			if _, err := srv.Bootstrap(); err != nil {
				t.Logf("bootstrap of node %d: %v", i, err)
			}
		}
		addrs = append(addrs, c.LocalAddr().String())
	}
	return addrs
}

type collector struct {
	mu    sync.Mutex
	addrs map[netip.AddrPort]string
}

func (c *collector) found(p discovery.Peer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addrs[p.Addr] = p.Label
}

func (c *collector) has(a netip.AddrPort) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.addrs[a]
	return ok
}

// TestSourcesFindEachOther: two sources announcing one info-hash on a
// private DHT find each other's socket; a third on another info-hash
// (another mesh) is found by neither and finds neither.
func TestSourcesFindEachOther(t *testing.T) {
	boot := privateDHT(t, privateDHTSize)
	ih := func(b byte) func(time.Time) [][mesh.DHTInfoHashSize]byte {
		return func(time.Time) [][mesh.DHTInfoHashSize]byte { return [][mesh.DHTInfoHashSize]byte{{b}} }
	}
	start := func(hash byte) (*Source, *collector, netip.AddrPort) {
		c := listen(t)
		s, err := New(Config{Conn: c, InfoHashes: ih(hash), Server: ServerConfig{Bootstrap: boot, SendRate: 1000}, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		col := &collector{addrs: map[netip.AddrPort]string{}}
		if err := s.Start(context.Background(), discovery.Sink{Found: col.found}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, col, c.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	a, ca, addrA := start(1)
	_, cb, addrB := start(1)
	_, cx, addrX := start(2)
	deadline := time.Now().Add(findWait)
	for !(ca.has(addrB) && cb.has(addrA)) {
		if time.Now().After(deadline) {
			t.Fatalf("within %v: a found %v, b found %v; want each other (%s, %s)", findWait, ca.addrs, cb.addrs, addrA, addrB)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := a.Stats(); st.Nodes == 0 || st.LastAnnounce.IsZero() || st.Found == 0 {
		t.Errorf("stats of a: %+v", st)
	}
	if ca.has(addrX) || cb.has(addrX) || cx.has(addrA) || cx.has(addrB) {
		t.Errorf("another info-hash's source was found or found ours: a %v, b %v, x %v", ca.addrs, cb.addrs, cx.addrs)
	}
	if !a.Found(addrB) || a.Found(addrX) {
		t.Errorf("a.Found(b) = %v, a.Found(x) = %v", a.Found(addrB), a.Found(addrX))
	}
}

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
