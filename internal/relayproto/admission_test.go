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
	honest := func(t *testing.T) ClientHello {
		ch, err := NewClientHello(sh, v.client, v.admission)
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	attacker, err := nodekey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	otherChallenge := sh
	otherChallenge.Challenge[0] ^= 1
	otherRelay, err := nodekey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		hello func(t *testing.T) ClientHello
		code  ErrorCode
	}{
		{"version 1", func(t *testing.T) ClientHello { ch := honest(t); ch.Version = 1; return ch }, ErrBadVersion},
		{"knows the rendezvous: own admission key, mesh's rendezvous", func(t *testing.T) ClientHello {
			// Both proofs honest for what it sends: only the check that
			// the rendezvous is the admission key's hash stops it.
			ch, err := NewClientHello(sh, attacker, admissionKey(7))
			if err != nil {
				t.Fatal(err)
			}
			ch.Rendezvous = v.admission.Rendezvous()
			tr := Transcript{ServerKey: sh.ServerKey, Challenge: sh.Challenge, ClientKey: attacker.Public(), Admission: ch.Admission, Rendezvous: ch.Rendezvous}
			shared, _ := attacker.SharedSecret(sh.ServerKey)
			ch.MAC, ch.Signature = tr.MAC(shared), tr.Sign(admissionKey(7))
			return ch
		}, ErrAuthFailed},
		{"knows the rendezvous and admission public key, signs with another key", func(t *testing.T) ClientHello {
			ch, err := NewClientHello(sh, attacker, v.admission)
			if err != nil {
				t.Fatal(err)
			}
			tr := Transcript{ServerKey: sh.ServerKey, Challenge: sh.Challenge, ClientKey: attacker.Public(), Admission: v.admission.Public(), Rendezvous: v.admission.Rendezvous()}
			ch.Signature = tr.Sign(admissionKey(7))
			return ch
		}, ErrAuthFailed},
		{"knows the rendezvous and admission public key, no signature", func(t *testing.T) ClientHello {
			ch, err := NewClientHello(sh, attacker, v.admission)
			if err != nil {
				t.Fatal(err)
			}
			ch.Signature = [SignatureSize]byte{}
			return ch
		}, ErrAuthFailed},
		{"signature replayed from another challenge", func(t *testing.T) ClientHello {
			old, err := NewClientHello(otherChallenge, attacker, v.admission)
			if err != nil {
				t.Fatal(err)
			}
			ch, err := NewClientHello(sh, attacker, admissionKey(7))
			if err != nil {
				t.Fatal(err)
			}
			// The attacker's own MAC for this connection, the member's
			// signature recorded on another one.
			ch.Admission, ch.Rendezvous, ch.Signature = old.Admission, old.Rendezvous, old.Signature
			tr := Transcript{ServerKey: sh.ServerKey, Challenge: sh.Challenge, ClientKey: attacker.Public(), Admission: ch.Admission, Rendezvous: ch.Rendezvous}
			shared, _ := attacker.SharedSecret(sh.ServerKey)
			ch.MAC = tr.MAC(shared)
			return ch
		}, ErrAuthFailed},
		{"signature made for another relay", func(t *testing.T) ClientHello {
			forOther := sh
			forOther.ServerKey = otherRelay.Public()
			old, err := NewClientHello(forOther, v.client, v.admission)
			if err != nil {
				t.Fatal(err)
			}
			ch := honest(t)
			ch.Signature = old.Signature
			return ch
		}, ErrAuthFailed},
		{"signature moved to another node key", func(t *testing.T) ClientHello {
			member := honest(t)
			ch, err := NewClientHello(sh, attacker, v.admission)
			if err != nil {
				t.Fatal(err)
			}
			ch.Signature = member.Signature
			return ch
		}, ErrAuthFailed},
		{"MAC keyed by another node key", func(t *testing.T) ClientHello {
			ch, err := NewClientHello(sh, attacker, v.admission)
			if err != nil {
				t.Fatal(err)
			}
			ch.ClientKey = v.client.Public()
			return ch
		}, ErrAuthFailed},
		{"low-order client key", func(t *testing.T) ClientHello {
			ch := honest(t)
			ch.ClientKey = Key{}
			return ch
		}, ErrAuthFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := tc.hello(t)
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
		ch := honest(t)
		if err := ch.Verify(v.server, sh); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("own mesh passes", func(t *testing.T) {
		// Anyone may make a mesh of their own: a fresh admission key with
		// its own rendezvous is admitted, to that rendezvous only.
		ch, err := NewClientHello(sh, attacker, admissionKey(7))
		if err != nil {
			t.Fatal(err)
		}
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
