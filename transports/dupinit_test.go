package transports

import (
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/plures/plurenet/internal/nodekey"
)

// initiationLike returns a 148-byte message that reads as a WireGuard
// handshake initiation with sender index idx and an ephemeral key from eph.
func initiationLike(idx, eph byte) []byte {
	b := make([]byte, wgInitiationSize)
	b[0] = wgInitiation
	b[4] = idx
	for i := 8; i < 40; i++ {
		b[i] = eph
	}
	b[100] = 0xaa // the rest (encrypted static, timestamp, MACs) does not matter
	return b
}

// TestDuplicateInitiationDropped: a copy of an initiation the Bind passed
// to the device reaches it as an empty packet, which the device skips,
// whichever receive function it comes through; other initiations, data
// packets and a copy after initiationMemory pass.
func TestDuplicateInitiationDropped(t *testing.T) {
	b := NewBind(BindConfig{})
	fns, _, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var k nodekey.Public
	a1, a2 := initiationLike(1, 1), initiationLike(2, 2)
	data := make([]byte, 100)
	data[0] = 4
	late := initiationLike(1, 1)
	late[100] = 0xbb // a copy by id, though its other bytes differ
	for _, p := range [][]byte{a1, data, initiationLike(1, 1), a2, late} {
		b.Deliver(k, p)
	}
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, len(bufs))
	eps := make([]conn.Endpoint, len(bufs))
	n, err := fns[0](bufs, sizes, eps)
	if err != nil {
		t.Fatal(err)
	}
	want := []int{len(a1), len(data), 0, len(a2), 0}
	if n != len(want) {
		t.Fatalf("received %d packets, want %d", n, len(want))
	}
	for i, w := range want {
		if sizes[i] != w {
			t.Errorf("packet %d: size %d, want %d (sizes %v)", i, sizes[i], w, sizes[:n])
		}
	}

	// Remembered for initiationMemory, no longer.
	var s initiations
	now := time.Now()
	if s.duplicate(a1, now) || !s.duplicate(a1, now.Add(initiationMemory-time.Millisecond)) || s.duplicate(a1, now.Add(initiationMemory)) {
		t.Fatal("an initiation is not remembered for exactly initiationMemory")
	}
	// Bounded: initiationsKept others evict it.
	for i := range initiationsKept {
		s.duplicate(initiationLike(byte(i), 0x55), now)
	}
	if s.duplicate(a1, now) {
		t.Fatalf("remembered more than %d initiations", initiationsKept)
	}
}
