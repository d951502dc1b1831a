package mesh

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"testing"
	"time"
)

// Vectors of docs/protocol.md 2.10, reproduced with Python's hmac/hashlib
// HKDF from the PRK of 2.9.
const (
	vecDHTKey      = "9c91056ca4f1ad18a040fd395b1a81e7774d44041ceea87ad576cce291334626"
	vecDHTDay      = 20455 // 2026-01-02, the day of vecTimeNanos
	vecDHTInfoHash = "adb892d35d3f297653dcefd64ea7106d88b770a3"
)

func TestVectorDHT(t *testing.T) {
	k := vecMeshKeys(t)
	if got := hex.EncodeToString(k.DHT[:]); got != vecDHTKey {
		t.Errorf("Keys.DHT = %s, want %s", got, vecDHTKey)
	}
	if d := DHTDayOf(time.Unix(0, vecTimeNanos)); d != vecDHTDay {
		t.Errorf("DHTDayOf(vector time) = %d, want %d", d, vecDHTDay)
	}
	h := DHTInfoHash(k, vecDHTDay)
	if got := hex.EncodeToString(h[:]); got != vecDHTInfoHash {
		t.Errorf("DHTInfoHash = %s, want %s", got, vecDHTInfoHash)
	}
	// Another secret on the same topic, or another day, gives another hash.
	if other := DHTInfoHash(testKeys(), vecDHTDay); other == h {
		t.Error("two meshes share an info-hash")
	}
	if next := DHTInfoHash(k, vecDHTDay+1); next == h {
		t.Error("the info-hash did not change with the day")
	}
}

func TestDHTInfoHashesOverlap(t *testing.T) {
	k := vecMeshKeys(t)
	midnight := time.Unix(vecDHTDay*86400, 0)
	today, yesterday, tomorrow := DHTInfoHash(k, vecDHTDay), DHTInfoHash(k, vecDHTDay-1), DHTInfoHash(k, vecDHTDay+1)
	for _, c := range []struct {
		name string
		at   time.Time
		want [][DHTInfoHashSize]byte
	}{
		{"midnight", midnight, [][DHTInfoHashSize]byte{today, yesterday}},
		{"just inside the overlap after", midnight.Add(DHTOverlap - time.Second), [][DHTInfoHashSize]byte{today, yesterday}},
		{"after the overlap", midnight.Add(DHTOverlap), [][DHTInfoHashSize]byte{today}},
		{"noon", midnight.Add(12 * time.Hour), [][DHTInfoHashSize]byte{today}},
		{"before the overlap", midnight.Add(DHTDay - DHTOverlap - time.Second), [][DHTInfoHashSize]byte{today}},
		{"in the overlap before", midnight.Add(DHTDay - DHTOverlap), [][DHTInfoHashSize]byte{today, tomorrow}},
		{"last second", midnight.Add(DHTDay - time.Second), [][DHTInfoHashSize]byte{today, tomorrow}},
	} {
		got := DHTInfoHashes(k, c.at)
		if len(got) != len(c.want) {
			t.Errorf("%s: %d hashes, want %d", c.name, len(got), len(c.want))
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s: hash %d = %x, want %x", c.name, i, got[i], c.want[i])
			}
		}
	}
}

// forwardBody is a valid forward body: the vector announcement, heard at
// 198.51.100.7:4000.
func forwardBody(t testing.TB) []byte {
	b, err := appendForward(nil, &Forward{Addr: netip.MustParseAddrPort("198.51.100.7:4000"), Sealed: unhex(t, vecAnnounce)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestForwardRoundTrip(t *testing.T) {
	keys := vecMeshKeys(t)
	priv := vecKey(t)
	inner := unhex(t, vecAnnounce)
	msg := Message{Kind: KindForward, From: priv.Public(), Forward: Forward{Addr: netip.MustParseAddrPort("198.51.100.7:4000"), Sealed: inner}}
	b, err := Seal(keys, priv, msg, time.Unix(0, vecTimeNanos))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(keys, b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != KindForward || got.Forward.Addr != msg.Forward.Addr || !bytes.Equal(got.Forward.Sealed, inner) {
		t.Fatalf("opened %+v", got.Forward)
	}
	// The inner announcement opens as its sender sealed it.
	a, err := Open(keys, got.Forward.Sealed)
	if err != nil || a.Kind != KindAnnounce || a.Announce.Name != vecName {
		t.Fatalf("inner: %+v, %v", a, err)
	}
	for _, bad := range []Forward{
		{Addr: netip.MustParseAddrPort("[2001:db8::1]:4000"), Sealed: inner},
		{Addr: netip.MustParseAddrPort("198.51.100.7:0"), Sealed: inner},
		{Addr: netip.MustParseAddrPort("198.51.100.7:4000"), Sealed: inner[:MinSealed-1]},
		{Addr: netip.MustParseAddrPort("198.51.100.7:4000"), Sealed: make([]byte, MaxForwardedLen+1)},
	} {
		if _, err := Seal(keys, priv, Message{Kind: KindForward, From: priv.Public(), Forward: bad}, time.Unix(0, vecTimeNanos)); err == nil {
			t.Errorf("sealed a forward of %s with %d bytes inside", bad.Addr, len(bad.Sealed))
		}
	}
}
