package mesh

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/plures/plurenet/internal/nodekey"
)

// assertMessage fails t unless got carries the same fields as want.
func assertMessage(t testing.TB, got, want Message) {
	t.Helper()
	if got.Kind != want.Kind || got.From != want.From || !got.Time.Equal(want.Time) {
		t.Fatalf("header: got %v %s %v, want %v %s %v", got.Kind, got.From.ShortString(), got.Time, want.Kind, want.From.ShortString(), want.Time)
	}
	ga, wa := got.Announce, want.Announce
	if ga.V4 != wa.V4 || ga.V6 != wa.V6 || ga.PinnedV4 != wa.PinnedV4 || ga.Name != wa.Name || !slices.Equal(ga.Candidates, wa.Candidates) {
		t.Fatalf("announce: got %+v, want %+v", ga, wa)
	}
	if !bytes.Equal(got.Signal, want.Signal) {
		t.Fatalf("signal: got %x, want %x", got.Signal, want.Signal)
	}
}

func testKeys() Keys { return DeriveKeys(TopicID("seal-test"), Stretched{1}) }

func TestSealOpenRoundTrip(t *testing.T) {
	keys := testKeys()
	base := vecAnnounceMessage(t)
	now := time.Date(2030, 5, 6, 7, 8, 9, 10, time.UTC)
	pinned := base
	pinned.Announce.PinnedV4 = true
	pinned.Announce.Name = ""
	pinned.Announce.Candidates = nil
	full := base
	full.Announce.Name = strings.Repeat("n", MaxNameLen)
	full.Announce.Candidates = nil
	for i := range MaxCandidates {
		full.Announce.Candidates = append(full.Announce.Candidates, strings.Repeat(string(rune('a'+i)), MaxCandidateLen))
	}
	for _, c := range []struct {
		name string
		msg  Message
	}{
		{"announce", base},
		{"announce pinned, no name, no candidates", pinned},
		{"announce at every limit", full},
		{"leave", Message{Kind: KindLeave, From: base.From}},
		{"signal", Message{Kind: KindSignal, From: base.From, Signal: []byte("offer")}},
		{"empty signal", Message{Kind: KindSignal, From: base.From}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := Seal(keys, vecKey(t), c.msg, now)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > MaxSealed || b[0] != SealedHeader {
				t.Fatalf("sealed %d bytes starting %#x", len(b), b[0])
			}
			got, err := Open(keys, b)
			if err != nil {
				t.Fatal(err)
			}
			want := c.msg
			want.Time = now
			assertMessage(t, got, want)
		})
	}
}

func TestSealFreshNonce(t *testing.T) {
	keys := testKeys()
	msg := vecAnnounceMessage(t)
	now := time.Unix(1e9, 0)
	a, err := Seal(keys, vecKey(t), msg, now)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Seal(keys, vecKey(t), msg, now)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a[1:1+NonceSize], b[1:1+NonceSize]) {
		t.Fatal("two seals used the same nonce")
	}
}

func TestSealRejects(t *testing.T) {
	keys := testKeys()
	good := vecAnnounceMessage(t)
	now := time.Unix(1e9, 0)
	mut := func(f func(m *Message)) Message {
		m := good
		m.Announce.Candidates = slices.Clone(good.Announce.Candidates)
		f(&m)
		return m
	}
	for _, c := range []struct {
		name string
		msg  Message
		now  time.Time
	}{
		{"unknown kind", mut(func(m *Message) { m.Kind = 9 }), now},
		{"zero kind", mut(func(m *Message) { m.Kind = 0 }), now},
		{"no IPv4", mut(func(m *Message) { m.Announce.V4 = netipZero }), now},
		{"IPv6 as IPv4", mut(func(m *Message) { m.Announce.V4 = m.Announce.V6 }), now},
		{"IPv4 as IPv6", mut(func(m *Message) { m.Announce.V6 = m.Announce.V4 }), now},
		{"name with space", mut(func(m *Message) { m.Announce.Name = "a b" }), now},
		{"name too long", mut(func(m *Message) { m.Announce.Name = strings.Repeat("x", MaxNameLen+1) }), now},
		{"too many candidates", mut(func(m *Message) { m.Announce.Candidates = make([]string, MaxCandidates+1) }), now},
		{"empty candidate", mut(func(m *Message) { m.Announce.Candidates = []string{""} }), now},
		{"candidate too long", mut(func(m *Message) { m.Announce.Candidates = []string{strings.Repeat("c", MaxCandidateLen+1)} }), now},
		{"candidate not printable", mut(func(m *Message) { m.Announce.Candidates = []string{"a\nb"} }), now},
		{"signal too large", Message{Kind: KindSignal, Signal: make([]byte, MaxSealed)}, now},
		{"time before 1678", good, time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"time after 2262", good, time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if b, err := Seal(keys, vecKey(t), c.msg, c.now); err == nil {
				t.Fatalf("sealed %d bytes, want an error", len(b))
			}
		})
	}
}

func TestOpenRejects(t *testing.T) {
	keys := testKeys()
	good, err := Seal(keys, vecKey(t), vecAnnounceMessage(t), time.Unix(1e9, 0))
	if err != nil {
		t.Fatal(err)
	}
	other, err := nodekey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := slices.Clone(good)
		b[i] ^= 0x01
		return b
	}
	var nonce [NonceSize]byte
	rawPT := func(kind Kind, body []byte) []byte {
		pt := make([]byte, headerLen, headerLen+len(body))
		pt[0] = byte(kind)
		binary.BigEndian.PutUint64(pt[1+nodekey.Size:], 1)
		return sealRaw(t, keys, vecKey(t), append(pt, body...))
	}
	// forged: a member holding the secret (other) seals an announcement
	// that names vecKey as its sender.
	forgedPT := make([]byte, headerLen)
	forgedPT[0] = byte(KindLeave)
	forged := sealRaw(t, keys, other, forgedPT)
	forgedOpen, err := aeadOpen(keys, forged)
	if err != nil {
		t.Fatal(err)
	}
	victim := vecKey(t).Public()
	copy(forgedOpen[1:], victim[:])
	forged, err = sealPlaintext(keys.Seal, nonce, forgedOpen)
	if err != nil {
		t.Fatal(err)
	}
	sigAltered := rawPT(KindLeave, nil)
	if pt, err := aeadOpen(keys, sigAltered); err != nil {
		t.Fatal(err)
	} else {
		pt[sigOffset+3] ^= 1
		if sigAltered, err = sealPlaintext(keys.Seal, nonce, pt); err != nil {
			t.Fatal(err)
		}
	}
	otherMesh := DeriveKeys(TopicID("seal-test-2"), Stretched{1})
	otherMesh.Seal = keys.Seal // same seal key, other rendezvous: the signature binds the mesh
	otherMeshMsg, err := Seal(otherMesh, vecKey(t), vecAnnounceMessage(t), time.Unix(1e9, 0))
	if err != nil {
		t.Fatal(err)
	}
	shortPT, err := sealPlaintext(keys.Seal, nonce, make([]byte, headerLen-1))
	if err != nil {
		t.Fatal(err)
	}
	wireGuardInit := make([]byte, 148)
	wireGuardInit[0] = 1
	for _, c := range []struct {
		name string
		b    []byte
		key  [32]byte
		want error
	}{
		{"empty", nil, keys.Seal, ErrNotSealed},
		{"header only", []byte{SealedHeader}, keys.Seal, ErrNotSealed},
		{"one byte short", good[:MinSealed-1], keys.Seal, ErrNotSealed},
		{"WireGuard handshake", wireGuardInit, keys.Seal, ErrNotSealed},
		{"header byte changed", flip(0), keys.Seal, ErrNotSealed},
		{"too large", append(slices.Clone(good), make([]byte, MaxSealed)...), keys.Seal, ErrTooLarge},
		{"wrong key", good, DeriveKeys(TopicID("seal-test"), Stretched{2}).Seal, ErrNotForThisMesh},
		{"another topic's key", good, DeriveKeys(TopicID("seal-test 2"), Stretched{1}).Seal, ErrNotForThisMesh},
		{"nonce altered", flip(5), keys.Seal, ErrNotForThisMesh},
		{"ciphertext altered", flip(1 + NonceSize + 3), keys.Seal, ErrNotForThisMesh},
		{"tag altered", flip(len(good) - 1), keys.Seal, ErrNotForThisMesh},
		{"truncated", good[:len(good)-1], keys.Seal, ErrNotForThisMesh},
		{"plaintext shorter than header", shortPT, keys.Seal, ErrNotSealed}, // caught by length before the tag
		{"unknown kind", rawPT(7, nil), keys.Seal, ErrMalformed},
		{"announce body empty", rawPT(KindAnnounce, nil), keys.Seal, ErrMalformed},
		{"sender forged by another member", forged, keys.Seal, ErrForged},
		{"signature altered", sigAltered, keys.Seal, ErrForged},
		{"signed for another mesh", otherMeshMsg, keys.Seal, ErrForged},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := keys
			k.Seal = c.key
			m, err := Open(k, c.b)
			if !errors.Is(err, c.want) {
				t.Fatalf("Open = %+v, %v; want %v", m, err, c.want)
			}
		})
	}
}

func TestOpenTimeRange(t *testing.T) {
	// Timestamps are signed: the whole int64 range decodes, and staleness is
	// the receiver's decision (replayGuard), not Open's.
	keys := testKeys()
	for _, ns := range []int64{math.MinInt64, -1, 0, math.MaxInt64} {
		pt := make([]byte, headerLen)
		pt[0] = byte(KindLeave)
		binary.BigEndian.PutUint64(pt[1+nodekey.Size:], uint64(ns))
		m, err := Open(keys, sealRaw(t, keys, vecKey(t), pt))
		if err != nil {
			t.Fatalf("ns %d: %v", ns, err)
		}
		if m.Time.UnixNano() != ns {
			t.Fatalf("ns %d decoded as %d", ns, m.Time.UnixNano())
		}
	}
}

// sealRaw signs an encoded plaintext as self (overwriting its sender and
// signature fields) and seals it, so tests reach the decoder behind both
// checks with bodies Seal would refuse to write.
func sealRaw(t testing.TB, keys Keys, self nodekey.Private, pt []byte) []byte {
	t.Helper()
	if len(pt) >= headerLen {
		pub := self.Public()
		copy(pt[1:], pub[:])
		sig, err := self.Sign(signedBytes(keys.Rendezvous, pt))
		if err != nil {
			t.Fatal(err)
		}
		copy(pt[sigOffset:headerLen], sig[:])
	}
	var nonce [NonceSize]byte
	b, err := sealPlaintext(keys.Seal, nonce, pt)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// aeadOpen decrypts a sealed message without checking anything else.
func aeadOpen(keys Keys, b []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(keys.Seal[:])
	if err != nil {
		return nil, err
	}
	return aead.Open(nil, b[1:1+NonceSize], b[1+NonceSize:], b[:1])
}

// FuzzOpen feeds arbitrary bytes to Open, and also signs and seals them as
// a plaintext so that the decoder behind the tag and signature checks is
// reached. Open must never panic, and whatever it accepts must re-seal and
// re-open unchanged.
func FuzzOpen(f *testing.F) {
	f.Add(unhex(f, vecAnnounce))
	f.Add(unhex(f, vecLeave))
	f.Add([]byte{SealedHeader})
	f.Add([]byte{1, 0, 0, 0})
	keys := vecMeshKeys(f)
	self := vecKey(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := Open(keys, b); err == nil && m.From == self.Public() {
			checkResealed(t, keys, self, m)
		}
		if len(b)+SealOverhead > MaxSealed {
			return
		}
		m, err := Open(keys, sealRaw(t, keys, self, slices.Clone(b)))
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !(len(b) < headerLen && errors.Is(err, ErrNotSealed)) {
				t.Fatalf("authentic plaintext rejected with %v, want ErrMalformed", err)
			}
			return
		}
		checkResealed(t, keys, self, m)
	})
}

func checkResealed(t *testing.T, keys Keys, self nodekey.Private, m Message) {
	t.Helper()
	b, err := Seal(keys, self, m, m.Time)
	if err != nil {
		t.Fatalf("accepted message does not re-seal: %v (%+v)", err, m)
	}
	back, err := Open(keys, b)
	if err != nil {
		t.Fatalf("re-sealed message does not open: %v", err)
	}
	assertMessage(t, back, m)
}

var netipZero netip.Addr
