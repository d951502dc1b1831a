package nodekey

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"fmt"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
)

// SignatureSize is the length of a signature made with Private.Sign.
const SignatureSize = ed25519.SignatureSize

// ErrBadSignature is returned by Public.Verify when a signature does not
// verify for the key and message.
var ErrBadSignature = errors.New("nodekey: signature does not verify")

// A node signs with its X25519 key itself, by XEdDSA (Signal's "XEdDSA and
// VXEdDSA" specification, revision 1, 2016, sections 2.3 and 2.4): the
// private scalar is used as an Ed25519 scalar, and verifiers turn the
// Montgomery public key into the Edwards point with sign bit 0. Why not a
// separate Ed25519 key? A second key would have to be bound to the X25519
// key somehow, and nothing but the X25519 key itself can vouch for that
// binding to every member at once; converting the other way (an Ed25519
// identity with a derived X25519 key) would change every existing node's
// key and with it its virtual IPs. The signatures verify with the standard
// library's crypto/ed25519, so only signing is built here, from
// filippo.io/edwards25519's scalar and point arithmetic.

// hashPrefix1 is hash_1's prefix of the specification: 2^256 - 2 in
// little-endian, 32 bytes (0xFE then 31 bytes of 0xFF). It keeps the nonce
// hash apart from any other SHA-512 of the same key material.
var hashPrefix1 = func() [32]byte {
	var p [32]byte
	for i := range p {
		p[i] = 0xFF
	}
	p[0] = 0xFE
	return p
}()

// edwardsKeyPair returns the XEdDSA key pair of k: the scalar a (negated
// when needed so that the public point's sign bit is 0) and its encoding A.
func (k Private) edwardsKeyPair() (*edwards25519.Scalar, [32]byte, error) {
	var A [32]byte
	a, err := edwards25519.NewScalar().SetBytesWithClamping(k[:])
	if err != nil {
		return nil, A, fmt.Errorf("nodekey: sign: %w", err)
	}
	E := new(edwards25519.Point).ScalarBaseMult(a)
	copy(A[:], E.Bytes())
	if A[31]&0x80 != 0 {
		a.Negate(a)
		A[31] &^= 0x80
	}
	return a, A, nil
}

// Sign returns an XEdDSA signature of msg by k, verifiable with
// k.Public().Verify. It draws 64 random bytes for the nonce, as the
// specification requires (a nonce that repeats for two messages would
// reveal the key; the randomness makes a fault or a reused state harmless).
func (k Private) Sign(msg []byte) ([SignatureSize]byte, error) {
	var sig [SignatureSize]byte
	var z [64]byte
	if _, err := rand.Read(z[:]); err != nil {
		return sig, fmt.Errorf("nodekey: sign: reading randomness: %w", err)
	}
	return k.SignWith(msg, z)
}

// SignWith is Sign with the nonce's random input z given by the caller,
// who must draw it from crypto/rand; only test vectors fix it.
func (k Private) SignWith(msg []byte, z [64]byte) ([SignatureSize]byte, error) {
	var sig [SignatureSize]byte
	a, A, err := k.edwardsKeyPair()
	if err != nil {
		return sig, err
	}
	h := sha512.New()
	h.Write(hashPrefix1[:])
	h.Write(a.Bytes())
	h.Write(msg)
	h.Write(z[:])
	r, err := edwards25519.NewScalar().SetUniformBytes(h.Sum(nil))
	if err != nil {
		return sig, fmt.Errorf("nodekey: sign: %w", err)
	}
	R := new(edwards25519.Point).ScalarBaseMult(r).Bytes()
	h.Reset()
	h.Write(R)
	h.Write(A[:])
	h.Write(msg)
	c, err := edwards25519.NewScalar().SetUniformBytes(h.Sum(nil))
	if err != nil {
		return sig, fmt.Errorf("nodekey: sign: %w", err)
	}
	s := edwards25519.NewScalar().MultiplyAdd(c, a, r)
	copy(sig[:32], R)
	copy(sig[32:], s.Bytes())
	return sig, nil
}

// edwards returns the Ed25519 public key that XEdDSA signatures of p's
// owner verify under: the Edwards point birationally equivalent to the
// Montgomery u-coordinate p, y = (u - 1) / (u + 1), with sign bit 0.
func (p Public) edwards() (ed25519.PublicKey, error) {
	var u, one, num, den, y field.Element
	if _, err := u.SetBytes(p[:]); err != nil {
		return nil, fmt.Errorf("nodekey: verify: %w", err)
	}
	// SetBytes ignores the top bit and reduces mod 2^255 - 19; the
	// specification requires a canonical u (u < p), so reject any encoding
	// that does not round-trip.
	if !bytes.Equal(u.Bytes(), p[:]) {
		return nil, fmt.Errorf("%w: public key is not a canonical field element", ErrBadSignature)
	}
	one.One()
	num.Subtract(&u, &one)
	den.Add(&u, &one)
	if den.Equal(new(field.Element)) == 1 {
		// u = -1 has no Edwards equivalent (it maps to a point at infinity).
		return nil, fmt.Errorf("%w: public key has no Edwards form", ErrBadSignature)
	}
	y.Multiply(&num, den.Invert(&den))
	return ed25519.PublicKey(y.Bytes()), nil
}

// Verify checks an XEdDSA signature of msg by the owner of p.
func (p Public) Verify(msg []byte, sig []byte) error {
	if len(sig) != SignatureSize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrBadSignature, len(sig), SignatureSize)
	}
	A, err := p.edwards()
	if err != nil {
		return err
	}
	if !ed25519.Verify(A, msg, sig) {
		return ErrBadSignature
	}
	return nil
}
