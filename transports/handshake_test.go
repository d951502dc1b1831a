package transports

import (
	"bytes"
	"testing"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/testkit"
)

// wgMessage returns a WireGuard-shaped message of type typ and size n.
func wgMessage(typ byte, n int, fill byte) []byte {
	b := bytes.Repeat([]byte{fill}, n)
	b[0], b[1], b[2], b[3] = typ, 0, 0, 0
	return b
}

// TestResendHandshake: the Bind sends the last handshake message it sent
// to a peer again, byte for byte, on request, at most handshakeResends
// times; data packets are never resent, nor is anything for a peer it
// forgot.
func TestResendHandshake(t *testing.T) {
	self, peer := testkit.Key(t).Public(), testkit.Key(t).Public()
	sender, receiver := NewBind(BindConfig{}), NewBind(BindConfig{})
	if _, _, err := receiver.Open(0); err != nil {
		t.Fatal(err)
	}
	defer receiver.Close()
	m := newMem("primary", self)
	m.peers[peer] = receiver
	sender.SetTransports(m)

	if sender.ResendHandshake(peer) {
		t.Fatal("resent a handshake before any was sent")
	}
	init := wgMessage(wgInitiation, wgInitiationSize, 0xAA)
	data := wgMessage(4, 64, 0xBB)
	for _, p := range [][]byte{init, data} {
		if err := sender.Send([][]byte{p}, Endpoint{Key: peer}); err != nil {
			t.Fatal(err)
		}
	}
	// Two packets in one batch are never a handshake.
	if err := sender.Send([][]byte{wgMessage(wgResponse, wgResponseSize, 0xCC), data}, Endpoint{Key: peer}); err != nil {
		t.Fatal(err)
	}
	drain(t, receiver, 4)

	for i := range handshakeResends {
		if !sender.ResendHandshake(peer) {
			t.Fatalf("resend %d refused", i+1)
		}
		got := drain(t, receiver, 1)
		if !bytes.Equal(got[0], init) {
			t.Fatalf("resend %d sent %x..., want the initiation", i+1, got[0][:8])
		}
	}
	if sender.ResendHandshake(peer) {
		t.Fatalf("resent more than %d times", handshakeResends)
	}

	// A response replaces the initiation; ForgetPeer drops it.
	resp := wgMessage(wgResponse, wgResponseSize, 0xDD)
	if err := sender.Send([][]byte{resp}, Endpoint{Key: peer}); err != nil {
		t.Fatal(err)
	}
	drain(t, receiver, 1)
	if !sender.ResendHandshake(peer) || !bytes.Equal(drain(t, receiver, 1)[0], resp) {
		t.Fatal("the response was not resent")
	}
	sender.ForgetPeer(peer)
	if sender.ResendHandshake(peer) {
		t.Fatal("resent a handshake to a forgotten peer")
	}
}

// drain reads n packets from an open Bind's own receive function.
func drain(t *testing.T, b *Bind, n int) [][]byte {
	t.Helper()
	recv := b.makeReceive(*b.inbox.Load(), b.closed)
	var out [][]byte
	for len(out) < n {
		pkts, sizes, eps := [][]byte{make([]byte, 2048)}, make([]int, 1), make([]conn.Endpoint, 1)
		if _, err := recv(pkts, sizes, eps); err != nil {
			t.Fatal(err)
		}
		out = append(out, bytes.Clone(pkts[0][:sizes[0]]))
	}
	return out
}

// tentativeMem is a transport whose path is tentative while the flag says so.
type tentativeMem struct {
	*memTransport
	tentative bool
}

func (tm *tentativeMem) Tentative(nodekey.Public) bool { return tm.tentative }

// TestTentativeCopies: while the preferred path is tentative, each batch
// also goes over the next transport that reaches the peer; the path stays
// the preferred one.
func TestTentativeCopies(t *testing.T) {
	self, peer := testkit.Key(t).Public(), testkit.Key(t).Public()
	sender, receiver := NewBind(BindConfig{}), NewBind(BindConfig{})
	if _, _, err := receiver.Open(0); err != nil {
		t.Fatal(err)
	}
	defer receiver.Close()
	direct := &tentativeMem{memTransport: newMem("direct", self), tentative: true}
	relay := newMem("relay", self)
	direct.peers[peer], relay.peers[peer] = receiver, receiver
	sender.SetTransports(direct, relay)

	batch := [][]byte{wgMessage(4, 64, 1), wgMessage(4, 64, 2)}
	if err := sender.Send(batch, Endpoint{Key: peer}); err != nil {
		t.Fatal(err)
	}
	if direct.count() != 2 || relay.count() != 2 || sender.Stats().TentativeCopies != 2 {
		t.Fatalf("tentative: direct sent %d, relay %d, copies %d; want 2, 2, 2", direct.count(), relay.count(), sender.Stats().TentativeCopies)
	}
	if p := sender.PathTo(peer); p.Name != "direct" {
		t.Fatalf("path = %q, want direct", p.Name)
	}
	direct.set(func(*memTransport) { direct.tentative = false })
	if err := sender.Send(batch, Endpoint{Key: peer}); err != nil {
		t.Fatal(err)
	}
	if direct.count() != 4 || relay.count() != 2 {
		t.Fatalf("confirmed: direct sent %d, relay %d; want 4, 2", direct.count(), relay.count())
	}
}
