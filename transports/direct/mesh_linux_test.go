package direct

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/testkit"
)

// listenLoopback opens a UDP socket on 127.0.0.x: Linux routes all of
// 127.0.0.0/8 to lo, so each socket is another source address on the
// "LAN", as a spoofing outsider would use.
func listenLoopback(t *testing.T, x byte) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, x)})
	if err != nil {
		t.Fatalf("listening on 127.0.0.%d: %v", x, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestMeshFloodSparesMembers (issue 9 item 6): an outsider floods the
// direct socket with garbage sealed datagrams from 50 source addresses
// while the node is busy (OnMesh stuck), then a member whose address the
// node knows announces itself. The flood is dropped by the limits unknown
// sources share; every one of the member's messages reaches OnMesh. With
// one rate limit and one queue for all sources (the code before this
// test), the flood took both and the member's messages were dropped.
func TestMeshFloodSparesMembers(t *testing.T) {
	const (
		flooders   = 50
		floodEach  = 20
		memberMsgs = 5
	)
	member := listenLoopback(t, 2)
	memberAddr := member.LocalAddr().(*net.UDPAddr).AddrPort()
	release := make(chan struct{})
	fromMember := make(chan []byte, memberMsgs)
	b, err := New(Config{
		PrivateKey: testkit.Key(t),
		ListenAddr: netip.MustParseAddr("127.0.0.1"),
		DisableICE: true,
		OnMesh: func(from netip.AddrPort, msg []byte) {
			<-release
			if from == memberAddr {
				fromMember <- msg
			}
		},
		Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	// The member's address is its path: the node knows it.
	if err := b.SetStatic(testkit.Key(t).Public(), memberAddr); err != nil {
		t.Fatal(err)
	}
	to := net.UDPAddrFromAddrPort(b.LocalAddr())
	garbage := bytes.Repeat([]byte{0xEE}, mesh.MinSealed)
	garbage[0] = mesh.SealedHeader
	for i := range flooders {
		c := listenLoopback(t, byte(10+i))
		for range floodEach {
			if _, err := c.WriteToUDP(garbage, to); err != nil {
				t.Fatal(err)
			}
		}
	}
	var sent [][]byte
	for i := range memberMsgs {
		msg := bytes.Repeat([]byte{byte(i)}, mesh.MinSealed+10)
		msg[0] = mesh.SealedHeader
		sent = append(sent, msg)
		if _, err := member.WriteToUDP(msg, to); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the reader has accounted for every datagram (loopback
	// with a large receive buffer loses none).
	const total = flooders*floodEach + memberMsgs
	deadline := time.Now().Add(staticWait)
	for {
		st := b.Stats()
		if st.MeshIn+st.DropsMeshRate+st.DropsMeshQueue >= total {
			if st.DropsMeshRate == 0 {
				t.Fatalf("a flood of %d datagrams from %d sources was not limited: %+v", total-memberMsgs, flooders, st)
			}
			if st.MeshIn > 2*meshQueue+1 {
				t.Fatalf("%d messages queued for a stuck OnMesh, at most %d fit", st.MeshIn, 2*meshQueue+1)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reader accounted for %d of %d datagrams: %+v", st.MeshIn+st.DropsMeshRate+st.DropsMeshQueue, total, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	released = true
	for i := range memberMsgs {
		select {
		case got := <-fromMember:
			if !bytes.Equal(got, sent[i]) {
				t.Fatalf("member message %d: got another (%x...)", i, got[:4])
			}
		case <-time.After(staticWait):
			t.Fatalf("only %d of the member's %d messages reached OnMesh during the flood: %+v", i, memberMsgs, b.Stats())
		}
	}
}
