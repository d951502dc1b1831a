package dht_test

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/plures/plurenet/discovery"
	"github.com/plures/plurenet/discovery/dht"
	"github.com/plures/plurenet/discovery/dht/dhttest"
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
	boot := dhttest.Private(t, privateDHTSize)
	ih := func(b byte) func(time.Time) [][mesh.DHTInfoHashSize]byte {
		return func(time.Time) [][mesh.DHTInfoHashSize]byte { return [][mesh.DHTInfoHashSize]byte{{b}} }
	}
	start := func(hash byte) (*dht.Source, *collector, netip.AddrPort) {
		c := listen(t)
		s, err := dht.New(dht.Config{Conn: c, InfoHashes: ih(hash), Server: dht.ServerConfig{Bootstrap: boot, SendRate: 1000}, Logger: slog.New(slog.DiscardHandler)})
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
