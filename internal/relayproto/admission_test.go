package relayproto

import (
	"errors"
	"testing"

	"github.com/plures/plurenet/internal/nodekey"
)

func admissionKey(b byte) AdmissionKey {
	var seed [32]byte
	for i := range seed {
		seed[i] = b
	}
	return NewAdmissionKey(seed)
}

// TestVerifyRefuses: every way of answering the relay without both keys, or
// with a proof made for another connection, relay or mesh, is refused.
// "Knows the rendezvous" cases are what a relay operator, an observer of a
// ws:// link or a former member can build: they have the rendezvous and the
// admission public key (both travel in every hello) but not the secret.
func TestVerifyRefuses(t *testing.T) {
	v := loadVectorKeys(t)
	sh := v.serverHello()
	attacker, err := nodekey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	otherRelay, err := nodekey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	// hello answers s as key admitted by adm, as an honest client would.
	hello := func(s ServerHello, key nodekey.Private, adm AdmissionKey) ClientHello {
		ch, err := NewClientHello(s, key, adm)
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	// reMAC recomputes ch's MAC for sh as key: whatever else it fakes, an
	// attacker proves its own node key honestly.
	reMAC := func(ch *ClientHello, key nodekey.Private) Transcript {
		tr := Transcript{ServerKey: sh.ServerKey, Challenge: sh.Challenge, ClientKey: key.Public(), Admission: ch.Admission, Rendezvous: ch.Rendezvous}
		shared, err := key.SharedSecret(sh.ServerKey)
		if err != nil {
			t.Fatal(err)
		}
		ch.MAC = tr.MAC(shared)
		return tr
	}
	otherChallenge, forOtherRelay := sh, sh
	otherChallenge.Challenge[0] ^= 1
	forOtherRelay.ServerKey = otherRelay.Public()
	own := admissionKey(7) // an admission key of the attacker's making
	cases := []struct {
		name  string
		spoil func(ch *ClientHello) // applied to the attacker's honest hello for the mesh
		code  ErrorCode
	}{
		{"version 1", func(ch *ClientHello) { ch.Version = 1 }, ErrBadVersion},
		{"knows the rendezvous: own admission key, mesh's rendezvous", func(ch *ClientHello) {
			// Both proofs honest for what it sends: only the check that
			// the rendezvous is the admission key's hash stops it.
			ch.Admission = own.Public()
			tr := reMAC(ch, attacker)
			ch.Signature = tr.Sign(own)
		}, ErrAuthFailed},
		{"knows the rendezvous and admission public key, signs with another key", func(ch *ClientHello) {
			tr := reMAC(ch, attacker)
			ch.Signature = tr.Sign(own)
		}, ErrAuthFailed},
		{"knows the rendezvous and admission public key, no signature", func(ch *ClientHello) {
			ch.Signature = [SignatureSize]byte{}
		}, ErrAuthFailed},
		{"signature made for another challenge", func(ch *ClientHello) {
			ch.Signature = hello(otherChallenge, attacker, v.admission).Signature
		}, ErrAuthFailed},
		{"signature made for another relay", func(ch *ClientHello) {
			ch.Signature = hello(forOtherRelay, attacker, v.admission).Signature
		}, ErrAuthFailed},
		{"a member's signature moved to another node key", func(ch *ClientHello) {
			ch.Signature = hello(sh, v.client, v.admission).Signature
		}, ErrAuthFailed},
		{"MAC keyed by another node key", func(ch *ClientHello) { ch.ClientKey = v.client.Public() }, ErrAuthFailed},
		{"low-order client key", func(ch *ClientHello) { ch.ClientKey = Key{} }, ErrAuthFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := hello(sh, attacker, v.admission)
			tc.spoil(&ch)
			// Through the wire format, as the relay sees it.
			back, err := ParseClientHello(ch.Append(nil))
			if err != nil {
				t.Fatal(err)
			}
			err = back.Verify(v.server, sh)
			var he *HelloError
			if !errors.As(err, &he) || he.Code != tc.code || he.Message == "" {
				t.Fatalf("Verify = %v, want a %v refusal", err, tc.code)
			}
		})
	}
	t.Run("honest hello passes", func(t *testing.T) {
		ch := hello(sh, v.client, v.admission)
		if err := ch.Verify(v.server, sh); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("own mesh passes", func(t *testing.T) {
		// Anyone may make a mesh of their own: a fresh admission key with
		// its own rendezvous is admitted, to that rendezvous only.
		ch := hello(sh, attacker, own)
		if err := ch.Verify(v.server, sh); err != nil || ch.Rendezvous == v.admission.Rendezvous() {
			t.Fatalf("Verify = %v, rendezvous %x", err, ch.Rendezvous)
		}
	})
}

func TestAdmissionKeys(t *testing.T) {
	a, b := admissionKey(1), admissionKey(2)
	if a.Public() == b.Public() || a.Rendezvous() == b.Rendezvous() {
		t.Fatal("different seeds give the same admission key or rendezvous")
	}
	if a != admissionKey(1) {
		t.Fatal("NewAdmissionKey is not deterministic")
	}
	if !(AdmissionKey{}).IsZero() || a.IsZero() {
		t.Fatal("IsZero")
	}
	if RendezvousOf(a.Public()) != a.Rendezvous() {
		t.Fatal("Rendezvous differs from RendezvousOf(Public)")
	}
}

// BenchmarkVerify is what a relay spends on each ClientHello it admits:
// one SHA-256, one X25519 and one Ed25519 verification.
func BenchmarkVerify(b *testing.B) {
	v := loadVectorKeys(b)
	sh := v.serverHello()
	ch, err := NewClientHello(sh, v.client, v.admission)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := ch.Verify(v.server, sh); err != nil {
			b.Fatal(err)
		}
	}
}
