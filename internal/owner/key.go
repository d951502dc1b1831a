package owner

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// PublicKey is the owner's Ed25519 public key: the one fact every member
// must hold to check the owner's documents.
type PublicKey [ed25519.PublicKeySize]byte

// Key is the owner's private key. It never leaves the owner directory.
type Key struct {
	priv ed25519.PrivateKey
}

// NewKey returns a fresh owner key.
func NewKey() (Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, fmt.Errorf("owner key: %w", err)
	}
	return Key{priv: priv}, nil
}

// KeyFromSeed returns the owner key of a 32-byte Ed25519 seed (the form it
// is stored in).
func KeyFromSeed(seed []byte) (Key, error) {
	if len(seed) != ed25519.SeedSize {
		return Key{}, fmt.Errorf("owner key: seed of %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	return Key{priv: ed25519.NewKeyFromSeed(seed)}, nil
}

// Seed returns the key's seed, for storing it.
func (k Key) Seed() []byte { return k.priv.Seed() }

// Public returns the owner public key.
func (k Key) Public() PublicKey {
	var p PublicKey
	copy(p[:], k.priv.Public().(ed25519.PublicKey))
	return p
}

// sign signs label || body. Each document type has its own label, so a
// signature over one can never be taken for another.
func (k Key) sign(label string, body []byte) []byte {
	return ed25519.Sign(k.priv, append([]byte(label), body...))
}

// ErrBadSignature is returned when a document's owner signature does not
// verify under the mesh's owner key.
var ErrBadSignature = errors.New("owner: signature does not verify under the mesh's owner key")

func (p PublicKey) verify(label string, body, sig []byte) error {
	if !ed25519.Verify(ed25519.PublicKey(p[:]), append([]byte(label), body...), sig) {
		return ErrBadSignature
	}
	return nil
}

// String returns the key as "owner:" + unpadded base64url, the form
// `plurenet owner init` prints.
func (p PublicKey) String() string {
	return "owner:" + base64.RawURLEncoding.EncodeToString(p[:])
}

// ParsePublicKey parses the form String returns.
func ParsePublicKey(s string) (PublicKey, error) {
	var p PublicKey
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), "owner:")
	if !ok {
		return p, fmt.Errorf("owner public key %q: want owner:BASE64URL as `plurenet owner init` prints it", s)
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(b) != len(p) {
		return p, fmt.Errorf("owner public key %q: want %d bytes in unpadded base64url", s, len(p))
	}
	copy(p[:], b)
	return p, nil
}
