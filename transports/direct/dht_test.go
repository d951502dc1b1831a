package direct

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/testkit"
)

const krpcPing = "d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"

// TestDHTConn: KRPC datagrams to the socket reach the DHT conn (and
// nothing else does); the conn sends only KRPC, from the socket; there is
// one conn per socket.
func TestDHTConn(t *testing.T) {
	tr, err := New(Config{PrivateKey: testkit.Key(t), ListenAddr: netip.MustParseAddr("127.0.0.1"), DisableICE: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	to := net.UDPAddrFromAddrPort(tr.LocalAddr())

	// Before DHTConn, KRPC is dropped as "other".
	if _, err := peer.WriteTo([]byte(krpcPing), to); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); tr.Stats().DropsOther != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("KRPC before DHTConn: stats %+v, want one DropsOther", tr.Stats())
		}
	}

	c, err := tr.DHTConn()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := tr.DHTConn(); !errors.Is(err, errDHTTwice) {
		t.Fatalf("second DHTConn: %v, want errDHTTwice", err)
	}
	// Garbage first, then KRPC: only the KRPC arrives.
	for _, m := range []string{"not krpc at all, just some bytes", krpcPing} {
		if _, err := peer.WriteTo([]byte(m), to); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 4096)
	n, from, err := c.ReadFrom(buf)
	if err != nil || string(buf[:n]) != krpcPing || from.String() != peer.LocalAddr().String() {
		t.Fatalf("ReadFrom = %q from %v, %v; want the ping from %v", buf[:n], from, err, peer.LocalAddr())
	}

	// Writes: KRPC goes out of the transport's socket; anything else is refused.
	if _, err := c.WriteTo([]byte(krpcPing), peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, src, err := peer.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != krpcPing || src != tr.LocalAddr() {
		t.Fatalf("peer read %q from %v, %v; want the ping from %v", buf[:n], src, err, tr.LocalAddr())
	}
	wg := make([]byte, 64)
	wg[0] = 4
	if _, err := c.WriteTo(wg, peer.LocalAddr()); err == nil {
		t.Fatal("the DHT conn sent a WireGuard-shaped datagram")
	}

	// Close ends a blocked read.
	done := make(chan error, 1)
	go func() { _, _, err := c.ReadFrom(buf); done <- err }()
	c.Close()
	if err := <-done; err == nil {
		t.Fatal("ReadFrom after Close returned no error")
	}
}
