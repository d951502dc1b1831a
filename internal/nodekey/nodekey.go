// Package nodekey gives the X25519 key pair that identifies a plurenet node.
//
// The same key is the node's WireGuard static key and the key it proves to a
// relay, so a peer is named by one 32-byte public key everywhere: in the
// WireGuard device, on the relay wire and in membership announcements.
package nodekey

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// Size is the length in bytes of public and private keys.
const Size = 32

// Public is an X25519 public key.
type Public [Size]byte

// Private is an X25519 private key, clamped as RFC 7748 section 5 requires.
type Private [Size]byte

// ErrLowOrder is returned by SharedSecret when the peer's public key is a
// low-order point; the result would be all zeros and known to anyone.
var ErrLowOrder = errors.New("nodekey: low-order public key")

// NewPrivate returns a fresh random private key.
func NewPrivate() (Private, error) {
	var k Private
	if _, err := rand.Read(k[:]); err != nil {
		return Private{}, fmt.Errorf("nodekey: reading randomness: %w", err)
	}
	k.clamp()
	return k, nil
}

func (k *Private) clamp() {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}

// IsZero reports whether k is the zero key (unset).
func (k Private) IsZero() bool { return k == Private{} }

// Public returns the public key of k.
func (k Private) Public() Public {
	var p Public
	pub, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		// X25519 with the base point cannot fail.
		panic(err)
	}
	copy(p[:], pub)
	return p
}

// SharedSecret returns X25519(k, peer).
func (k Private) SharedSecret(peer Public) ([Size]byte, error) {
	var out [Size]byte
	s, err := curve25519.X25519(k[:], peer[:])
	if err != nil {
		return out, ErrLowOrder
	}
	copy(out[:], s)
	return out, nil
}

// String returns the key in standard base64, as WireGuard tools print keys.
func (k Private) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// IsZero reports whether p is the zero key (unset).
func (p Public) IsZero() bool { return p == Public{} }

// String returns the key in standard base64, as WireGuard tools print keys.
func (p Public) String() string { return base64.StdEncoding.EncodeToString(p[:]) }

// ShortString returns the first 8 base64 characters, for logs.
func (p Public) ShortString() string { return p.String()[:8] }

// Hex returns the key in lowercase hex, as the WireGuard UAPI wants it.
func (p Public) Hex() string { return hex.EncodeToString(p[:]) }

// Hex returns the key in lowercase hex, as the WireGuard UAPI wants it.
func (k Private) Hex() string { return hex.EncodeToString(k[:]) }

// MarshalText encodes p as base64.
func (p Public) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText decodes base64 or hex.
func (p *Public) UnmarshalText(b []byte) error {
	k, err := ParsePublic(string(b))
	if err != nil {
		return err
	}
	*p = k
	return nil
}

// ParsePublic accepts a key as standard base64 (44 characters) or hex (64).
func ParsePublic(s string) (Public, error) {
	var p Public
	b, err := parse(s)
	if err != nil {
		return p, fmt.Errorf("public key %q: %w", s, err)
	}
	copy(p[:], b)
	return p, nil
}

// ParsePrivate accepts a key as standard base64 (44 characters) or hex (64).
func ParsePrivate(s string) (Private, error) {
	var k Private
	b, err := parse(s)
	if err != nil {
		return k, fmt.Errorf("private key: %w", err)
	}
	copy(k[:], b)
	k.clamp()
	return k, nil
}

func parse(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	var b []byte
	var err error
	switch len(s) {
	case 64:
		b, err = hex.DecodeString(s)
	case 44:
		b, err = base64.StdEncoding.DecodeString(s)
	default:
		return nil, fmt.Errorf("want 44 base64 or 64 hex characters, got %d", len(s))
	}
	if err != nil {
		return nil, err
	}
	if len(b) != Size {
		return nil, fmt.Errorf("want %d bytes, got %d", Size, len(b))
	}
	return b, nil
}
