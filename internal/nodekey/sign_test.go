package nodekey

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"filippo.io/edwards25519"
)

// The Edwards key XEdDSA derives must be the same curve point as the X25519
// public key: filippo.io/edwards25519's own Montgomery conversion of the
// point checks our scalar handling and sign choice independently.
func TestEdwardsKeyMatchesX25519(t *testing.T) {
	for i := 0; i < 64; i++ {
		k, err := NewPrivate()
		if err != nil {
			t.Fatal(err)
		}
		_, A, err := k.edwardsKeyPair()
		if err != nil {
			t.Fatal(err)
		}
		P, err := new(edwards25519.Point).SetBytes(A[:])
		if err != nil {
			t.Fatalf("key %d: A is not a point: %v", i, err)
		}
		pub := k.Public()
		if got := P.BytesMontgomery(); !bytes.Equal(got, pub[:]) {
			t.Fatalf("key %d: Montgomery form of A = %x, X25519 public key = %x", i, got, pub)
		}
		ed, err := pub.edwards()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ed, A[:]) {
			t.Fatalf("key %d: verifier's Edwards key %x, signer's %x", i, ed, A)
		}
	}
}

func TestSignVerify(t *testing.T) {
	alice, _ := NewPrivate()
	bob, _ := NewPrivate()
	msg := []byte("plurenet announcement")
	sig, err := alice.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.Public().Verify(msg, sig[:]); err != nil {
		t.Fatalf("valid signature: %v", err)
	}
	other := append([]byte(nil), msg...)
	other[0] ^= 1
	badSig := sig
	badSig[40] ^= 1
	cases := []struct {
		name string
		pub  Public
		msg  []byte
		sig  []byte
	}{
		{"other key", bob.Public(), msg, sig[:]},
		{"altered message", alice.Public(), other, sig[:]},
		{"altered signature", alice.Public(), msg, badSig[:]},
		{"short signature", alice.Public(), msg, sig[:63]},
		{"non-canonical key", Public{0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, msg, sig[:]},
		{"u = -1", Public{0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, msg, sig[:]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.pub.Verify(tc.msg, tc.sig); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("Verify = %v, want ErrBadSignature", err)
			}
		})
	}
}

// TestSignVector pins the signature of docs/protocol.md's vector: the RFC
// 7748 section 6.1 key, a fixed nonce input Z of 64 zero bytes (only the
// vector fixes Z; Sign draws it at random) and the message "plurenet".
func TestSignVector(t *testing.T) {
	var k Private
	mustHex(t, k[:], "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	sig, err := k.SignWith([]byte("plurenet"), [64]byte{})
	if err != nil {
		t.Fatal(err)
	}
	const want = "f1539ec8b64bcb8734213c8d15dc03f27cc269e8ef6ecdd4adb332503fe4d3977738ac00029da3f12642bedbd59abd091b4c7b10e34c237e7b3f2d078c531e00"
	if got := hex.EncodeToString(sig[:]); got != want {
		t.Fatalf("signature\n got %s\nwant %s", got, want)
	}
	if err := k.Public().Verify([]byte("plurenet"), sig[:]); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkSign(b *testing.B) {
	k, _ := NewPrivate()
	msg := make([]byte, 200)
	for b.Loop() {
		if _, err := k.Sign(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	k, _ := NewPrivate()
	msg := make([]byte, 200)
	sig, _ := k.Sign(msg)
	pub := k.Public()
	for b.Loop() {
		if err := pub.Verify(msg, sig[:]); err != nil {
			b.Fatal(err)
		}
	}
}
