package relayproto

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"

	"github.com/plures/plurenet/internal/nodekey"
)

// Labels. Each proof and hash has its own, so no value computed for one
// purpose is ever accepted for another; "v2" keeps them apart from anything
// protocol v1 computed.
const (
	// authLabel prefixes the transcript under the MAC that proves the node
	// key.
	authLabel = "plurenet relay v2 auth"
	// admissionLabel prefixes the transcript under the signature that
	// proves the admission key.
	admissionLabel = "plurenet relay v2 admission"
	// rendezvousLabel prefixes the admission public key in the rendezvous
	// hash.
	rendezvousLabel = "plurenet v2 rendezvous"
)

// AdmissionPublic is the public half of a mesh's admission key: an Ed25519
// public key (RFC 8032). Every member of a mesh derives the same one from
// the topic and secret (internal/mesh), so it names the mesh on the relay as
// the rendezvous does.
type AdmissionPublic [AdmissionKeySize]byte

// AdmissionKey is a mesh's admission key pair. Only members can derive it;
// the relay admits a client to a rendezvous only with a signature by it. It
// is kept as its 32-byte seed (RFC 8032 section 5.1.5) so that the type stays
// comparable and copyable like the other keys.
type AdmissionKey struct {
	seed [ed25519.SeedSize]byte
	pub  AdmissionPublic
}

// NewAdmissionKey returns the admission key pair of a 32-byte seed.
func NewAdmissionKey(seed [ed25519.SeedSize]byte) AdmissionKey {
	a := AdmissionKey{seed: seed}
	copy(a.pub[:], ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey))
	return a
}

// IsZero reports whether a is unset.
func (a AdmissionKey) IsZero() bool { return a == AdmissionKey{} }

// Public returns the public half of a.
func (a AdmissionKey) Public() AdmissionPublic { return a.pub }

// Rendezvous returns the rendezvous a names: RendezvousOf(a.Public()).
func (a AdmissionKey) Rendezvous() Rendezvous { return RendezvousOf(a.pub) }

// RendezvousOf returns SHA-256(rendezvousLabel || pub), the rendezvous of
// the mesh whose admission public key is pub. The relay recomputes it from
// the key in a ClientHello, so a client cannot pair a rendezvous with an
// admission key of its own making. SHA-256 rather than the mesh layer's
// BLAKE2b because the Node relay must compute it too, and node:crypto has
// no BLAKE2b-256.
func RendezvousOf(pub AdmissionPublic) Rendezvous {
	h := sha256.New()
	h.Write([]byte(rendezvousLabel))
	h.Write(pub[:])
	var rv Rendezvous
	h.Sum(rv[:0])
	return rv
}

// Transcript is what both proofs of a ClientHello cover: the relay's key
// and its fresh challenge (so a proof is good for one connection to one
// relay), and the client's key, admission key and rendezvous (so none of
// them can be swapped under a proof).
type Transcript struct {
	ServerKey  Key
	Challenge  [ChallengeSize]byte
	ClientKey  Key
	Admission  AdmissionPublic
	Rendezvous Rendezvous
}

// transcriptSize is the transcript's length without a label.
const transcriptSize = KeySize + ChallengeSize + KeySize + AdmissionKeySize + RendezvousSize

// appendTo appends label || S || C || K || A || R to b.
func (t *Transcript) appendTo(b []byte, label string) []byte {
	b = append(b, label...)
	b = append(b, t.ServerKey[:]...)
	b = append(b, t.Challenge[:]...)
	b = append(b, t.ClientKey[:]...)
	b = append(b, t.Admission[:]...)
	return append(b, t.Rendezvous[:]...)
}

// MAC returns HMAC-SHA256(shared, authLabel || transcript), where shared is
// the X25519 secret of the client and relay keys. Only the holder of the
// client's private key (or the relay's) can compute it.
func (t *Transcript) MAC(shared [32]byte) [MACSize]byte {
	m := hmac.New(sha256.New, shared[:])
	m.Write(t.appendTo(make([]byte, 0, len(authLabel)+transcriptSize), authLabel))
	var out [MACSize]byte
	m.Sum(out[:0])
	return out
}

// signed returns the message the admission key signs.
func (t *Transcript) signed() []byte {
	return t.appendTo(make([]byte, 0, len(admissionLabel)+transcriptSize), admissionLabel)
}

// Sign returns a's Ed25519 signature over admissionLabel || transcript.
func (t *Transcript) Sign(a AdmissionKey) [SignatureSize]byte {
	var sig [SignatureSize]byte
	copy(sig[:], ed25519.Sign(ed25519.NewKeyFromSeed(a.seed[:]), t.signed()))
	return sig
}

// VerifySignature reports whether sig is t.Admission's signature over
// admissionLabel || transcript.
func (t *Transcript) VerifySignature(sig [SignatureSize]byte) bool {
	return ed25519.Verify(t.Admission[:], t.signed(), sig[:])
}

// NewClientHello answers the relay's ServerHello sh as the node key key,
// admitted by adm to the rendezvous adm names.
func NewClientHello(sh ServerHello, key nodekey.Private, adm AdmissionKey) (ClientHello, error) {
	shared, err := key.SharedSecret(sh.ServerKey)
	if err != nil {
		return ClientHello{}, fmt.Errorf("relay key: %w", err)
	}
	t := Transcript{
		ServerKey:  sh.ServerKey,
		Challenge:  sh.Challenge,
		ClientKey:  key.Public(),
		Admission:  adm.Public(),
		Rendezvous: adm.Rendezvous(),
	}
	return ClientHello{
		Version:    Version,
		ClientKey:  t.ClientKey,
		Admission:  t.Admission,
		Rendezvous: t.Rendezvous,
		MAC:        t.MAC(shared),
		Signature:  t.Sign(adm),
	}, nil
}

// HelloError is why a relay refuses a ClientHello: the code of the Error
// frame it answers with and a message for the client.
type HelloError struct {
	Code    ErrorCode
	Message string
}

func (e *HelloError) Error() string { return fmt.Sprintf("%v: %s", e.Code, e.Message) }

// Verify checks h against the ServerHello sh that the relay holding relay
// sent on this connection. It returns nil when the client proved both that
// it holds ClientKey's private key and that it holds the admission key of
// the rendezvous it asks for; otherwise a *HelloError.
//
// Cheapest check first: the rendezvous hash, then X25519 for the MAC, then
// the Ed25519 verification.
func (h *ClientHello) Verify(relay nodekey.Private, sh ServerHello) error {
	if h.Version != Version {
		return &HelloError{ErrBadVersion, fmt.Sprintf("relay speaks protocol version %d (%s), client sent %d", Version, Subprotocol, h.Version)}
	}
	if RendezvousOf(h.Admission) != h.Rendezvous {
		return &HelloError{ErrAuthFailed, "rendezvous is not the hash of the admission key: the client does not hold this mesh's admission key"}
	}
	shared, err := relay.SharedSecret(h.ClientKey)
	if err != nil {
		return &HelloError{ErrAuthFailed, "client key is a low-order point"}
	}
	t := Transcript{ServerKey: sh.ServerKey, Challenge: sh.Challenge, ClientKey: h.ClientKey, Admission: h.Admission, Rendezvous: h.Rendezvous}
	want := t.MAC(shared)
	// Constant time, so the comparison leaks nothing about the right MAC.
	if !hmac.Equal(want[:], h.MAC[:]) {
		return &HelloError{ErrAuthFailed, "handshake MAC does not verify: the client does not hold the key it claims, or answered another challenge"}
	}
	if !t.VerifySignature(h.Signature) {
		return &HelloError{ErrAuthFailed, "admission signature does not verify: the client does not hold this mesh's secret, or answered another challenge"}
	}
	return nil
}
