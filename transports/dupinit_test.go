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
// to the device reaches it as an empty packet, which the device skips;
// other initiations and data packets pass. The first copy held back comes
// back through the inbox initiationRetry after the original, once, so that
// a first copy the device refused (its sender not yet a peer) is not the
// last word.
func TestDuplicateInitiationDropped(t *testing.T) {
	b := NewBind(BindConfig{})
	fns, _, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	k := nodekey.Public{7}
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

	// The held copy (the first one, not late) arrives on its own, from k.
	n, err = fns[0](bufs, sizes, eps)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || sizes[0] != len(a1) || bufs[0][100] != 0xaa || eps[0] != (Endpoint{Key: k}) {
		t.Fatalf("after the hold: %d packets, sizes %v, from %v; want the held copy of a1 from %v", n, sizes[:n], eps[0], Endpoint{Key: k})
	}
	// Nothing else was held: the next packet is one delivered later.
	time.Sleep(2 * initiationRetry)
	b.Deliver(k, data)
	if n, err = fns[0](bufs, sizes, eps); err != nil || n != 1 || sizes[0] != len(data) {
		t.Fatalf("then: %d packets, sizes %v, %v; want only the data packet", n, sizes[:n], err)
	}
}

// TestInitiationAdmit walks one initiation's copies through admit on a
// clock of its own.
func TestInitiationAdmit(t *testing.T) {
	s := initiations{redeliver: func(nodekey.Public, []byte) {}}
	a := initiationLike(1, 1)
	t0 := time.Now()
	steps := []struct {
		after time.Duration
		pass  bool
		hold  time.Duration
	}{
		{0, true, 0}, // the first copy
		{time.Millisecond, false, initiationRetry - time.Millisecond}, // held until initiationRetry after the first
		{2 * time.Millisecond, false, 0},                              // one copy is held, no more
		{initiationRetry, true, 0},                                    // one later copy passes (the held one, or another)
		{initiationRetry + time.Millisecond, false, 0},
		{initiationMemory - time.Millisecond, false, 0},
		{initiationMemory, true, 0}, // forgotten: taken as a new initiation
	}
	for i, st := range steps {
		pass, hold := s.admit(a, t0.Add(st.after))
		if pass != st.pass || hold != st.hold {
			t.Fatalf("step %d (+%v): pass %v, hold %v; want %v, %v", i, st.after, pass, hold, st.pass, st.hold)
		}
	}

	// Without a way to deliver again, a copy is dropped, not held.
	var plain initiations
	plain.admit(a, t0)
	if pass, hold := plain.admit(a, t0.Add(time.Millisecond)); pass || hold != 0 {
		t.Fatalf("no redeliver: pass %v, hold %v", pass, hold)
	}

	// Bounded: at most initiationsKept copies are held at once, and
	// initiationsKept others evict a remembered initiation.
	var many initiations
	many.redeliver = s.redeliver
	for i := range initiationsKept {
		p := initiationLike(byte(i), 0x55)
		many.admit(p, t0)
		if _, hold := many.admit(p, t0.Add(time.Millisecond)); hold == 0 {
			t.Fatalf("copy %d not held", i)
		}
	}
	p := initiationLike(200, 0x66)
	many.admit(p, t0)
	if _, hold := many.admit(p, t0.Add(time.Millisecond)); hold != 0 {
		t.Fatalf("held more than %d copies", initiationsKept)
	}
	many.release() // a timer fired: room for one more
	q := initiationLike(201, 0x66)
	many.admit(q, t0)
	if _, hold := many.admit(q, t0.Add(time.Millisecond)); hold == 0 {
		t.Fatal("no copy held after a release")
	}
	var evict initiations
	evict.admit(a, t0)
	for i := range initiationsKept {
		evict.admit(initiationLike(byte(i), 0x77), t0)
	}
	if pass, _ := evict.admit(a, t0.Add(time.Millisecond)); !pass {
		t.Fatalf("remembered more than %d initiations", initiationsKept)
	}
}
