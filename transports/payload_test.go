package transports

import (
	"bytes"
	"strings"
	"testing"

	"github.com/pion/stun/v4"

	"github.com/plures/plurenet/internal/mesh"
)

// sealedLike is n bytes that look like a sealed mesh message to Classify
// (which checks only the header byte and the size).
func sealedLike(n int) []byte {
	b := make([]byte, n)
	b[0] = mesh.SealedHeader
	return b
}

func TestClassify(t *testing.T) {
	wg := func(typ byte, n int) []byte {
		b := make([]byte, n)
		b[0] = typ
		return b
	}
	binding := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("a:b"), stun.Fingerprint).Raw
	// A STUN header whose type bytes look like a WireGuard type (0x0100,
	// length 0): WireGuard wins, as documented.
	stunLike := append([]byte{1, 0, 0, 0, 0x21, 0x12, 0xa4, 0x42}, make([]byte, 24)...)
	// A WireGuard initiation whose sender index happens to equal the magic
	// cookie is still WireGuard.
	cookieIndex := wg(1, 148)
	copy(cookieIndex[4:], []byte{0x21, 0x12, 0xa4, 0x42})
	badTop := bytes.Clone(binding)
	badTop[0] |= 0x80

	tests := []struct {
		name string
		in   []byte
		want Payload
	}{
		{"wg initiation", wg(1, 148), PayloadWireGuard},
		{"wg response", wg(2, 92), PayloadWireGuard},
		{"wg cookie", wg(3, 64), PayloadWireGuard},
		{"wg data", wg(4, 32), PayloadWireGuard},
		{"wg data large", wg(4, 1452), PayloadWireGuard},
		{"wg sender index = cookie", cookieIndex, PayloadWireGuard},
		{"wg too short", wg(4, 31), PayloadOther},
		{"wg type 5", wg(5, 148), PayloadOther},
		{"wg type 0", wg(0, 148), PayloadOther},
		{"wg reserved byte set", func() []byte { b := wg(4, 64); b[2] = 1; return b }(), PayloadOther},
		{"stun binding", binding, PayloadSTUN},
		{"stun success", stun.MustBuild(stun.TransactionID, stun.BindingSuccess).Raw, PayloadSTUN},
		{"stun top bits set", badTop, PayloadOther},
		{"stun-like header", stunLike, PayloadWireGuard},
		{"stun short", binding[:19], PayloadOther},
		{"empty", nil, PayloadOther},
		{"dns-ish", []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}, PayloadOther},
		{"sealed smallest", sealedLike(mesh.MinSealed), PayloadSealed},
		{"sealed largest", sealedLike(mesh.MaxSealed), PayloadSealed},
		{"sealed too short", sealedLike(mesh.MinSealed - 1), PayloadOther},
		{"sealed too long", sealedLike(mesh.MaxSealed + 1), PayloadOther},
		{"sealed wrong header", func() []byte { b := sealedLike(200); b[0] = 0xF2; return b }(), PayloadOther},
		{"krpc ping", []byte(krpcPing), PayloadDHT},
		{"krpc smallest error", []byte("d1:eli201e0:e1:t1:x1:y1:ee"), PayloadDHT},
		{"krpc two-digit key", []byte("d10:abcdefghij1:x1:t1:x1:y1:qe"), PayloadDHT},
		{"krpc too short", []byte("d1:eli201e0:e1:t0:1:y1:ee"), PayloadOther},
		{"krpc too long", []byte("d1:t" + strings.Repeat("x", KRPCMaxLen) + "e"), PayloadOther},
		{"krpc no final e", []byte(krpcPing[:len(krpcPing)-1] + "x"), PayloadOther},
		{"krpc leading zero", []byte("d01:t" + krpcPing[4:]), PayloadOther},
		{"krpc no colon", []byte("d123" + krpcPing[4:]), PayloadOther},
		{"krpc list, not dict", []byte("l" + krpcPing[1:]), PayloadOther},
		{"krpc key not a string", []byte("di1e" + krpcPing[4:]), PayloadOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.in); got != tt.want {
				t.Fatalf("Classify = %v, want %v", got, tt.want)
			}
		})
	}
}

// krpcPing is a Mainline DHT ping query as BEP 5 gives it.
const krpcPing = "d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"

func FuzzClassify(f *testing.F) {
	f.Add([]byte(krpcPing))
	f.Add([]byte("d1:eli201e0:e1:t1:x1:y1:ee"))
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	f.Add(append([]byte{4, 0, 0, 0}, make([]byte, 60)...))
	f.Add([]byte{1, 0, 0, 0, 0x21, 0x12, 0xa4, 0x42})
	f.Add(sealedLike(mesh.MinSealed))
	f.Fuzz(func(t *testing.T, b []byte) {
		switch Classify(b) {
		case PayloadWireGuard:
			if len(b) < WireGuardMinLen || b[0] < 1 || b[0] > 4 || b[1]|b[2]|b[3] != 0 {
				t.Fatalf("% x classified as WireGuard", b[:min(len(b), 8)])
			}
		case PayloadSTUN:
			if !stun.IsMessage(b) || b[0]&0xC0 != 0 {
				t.Fatalf("% x classified as STUN", b[:min(len(b), 8)])
			}
		case PayloadSealed:
			if len(b) < mesh.MinSealed || len(b) > mesh.MaxSealed || b[0] != mesh.SealedHeader {
				t.Fatalf("%d bytes starting %x classified as a sealed mesh message", len(b), b[0])
			}
		case PayloadDHT:
			if len(b) < KRPCMinLen || len(b) > KRPCMaxLen || b[0] != 'd' || b[len(b)-1] != 'e' || b[1] < '1' || b[1] > '9' || !bytes.Contains(b[2:4], []byte(":")) {
				t.Fatalf("%d bytes %q... classified as KRPC", len(b), b[:min(len(b), 8)])
			}
		}
	})
}
