package mesh

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/plures/plurenet/internal/nodekey"
)

// SealedHeader is the first byte of every sealed mesh message. WireGuard
// messages start with their type, 1 to 4, so a receiver that gets both kinds
// of payload over a relay tells them apart by this byte alone.
const SealedHeader = 0xF1

// Sealed message sizes. MaxSealed bounds what a receiver decrypts: an
// announcement at its limits is about 1.2 KiB, and 4 KiB leaves room for
// later fields and signaling without letting a member make others spend
// much on one message.
const (
	NonceSize    = chacha20poly1305.NonceSizeX
	TagSize      = chacha20poly1305.Overhead
	SealOverhead = 1 + NonceSize + TagSize
	MinSealed    = SealOverhead + headerLen
	MaxSealed    = 4096
)

// Errors of Open. Callers tell "not ours" (ErrNotSealed: maybe a WireGuard
// packet; ErrNotForThisMesh: another mesh, or tampering) from a member
// sending garbage (ErrMalformed).
var (
	ErrNotSealed = errors.New("not a sealed mesh message")
	ErrTooLarge  = errors.New("sealed mesh message too large")
	// ErrNotForThisMesh is returned when the authentication tag does not
	// verify: the message was sealed with another mesh's key, or was altered
	// on the way. AEAD cannot tell the two apart.
	ErrNotForThisMesh = errors.New("sealed mesh message does not authenticate with this mesh's key")
	// ErrForged is returned when a message authenticates with the mesh's
	// key but its sender's signature does not verify: a member holding the
	// secret tried to speak for another key.
	ErrForged = errors.New("sealed mesh message not signed by its sender")
)

// labelSender separates the sender signature of a sealed message from any
// other signature a node key makes.
const labelSender = "plurenet v2 sealed sender"

// signedBytes returns what a sender signs: the label, the mesh's rendezvous
// (so a message cannot be replayed into another mesh that shares its
// secret), and the plaintext without the signature field.
func signedBytes(rendezvous [32]byte, pt []byte) []byte {
	b := make([]byte, 0, len(labelSender)+len(rendezvous)+len(pt)-nodekey.SignatureSize)
	b = append(b, labelSender...)
	b = append(b, rendezvous[:]...)
	b = append(b, pt[:sigOffset]...)
	return append(b, pt[headerLen:]...)
}

// Seal signs msg with the sender's node key and encrypts it with keys.Seal,
// stamped with now (msg.Time is ignored; msg.From is set to self's public
// key). The nonce is 24 random bytes: XChaCha20's nonce is long enough that
// random nonces never repeat in practice, so members need no nonce counter
// shared across restarts.
//
// The mesh key alone proves only that the sender holds the secret; the
// signature proves which member it is, whatever carried the message (relay,
// UDP, LAN multicast), so a member cannot forge another's announcement or
// leave.
//
// Each sender should stamp its messages with strictly increasing times (see
// Stamper), since receivers drop any message not newer than the last they
// accepted from that sender.
func Seal(keys Keys, self nodekey.Private, msg Message, now time.Time) ([]byte, error) {
	var nonce [NonceSize]byte
	var z [64]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("mesh: seal: reading nonce: %w", err)
	}
	if _, err := rand.Read(z[:]); err != nil {
		return nil, fmt.Errorf("mesh: seal: reading randomness: %w", err)
	}
	return seal(keys, self, nonce, z, msg, now)
}

// minTime and maxTime bound what int64 Unix nanoseconds can carry.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// seal is Seal with the nonce and the signature's random input z given, for
// the test vectors.
func seal(keys Keys, self nodekey.Private, nonce [NonceSize]byte, z [64]byte, msg Message, now time.Time) ([]byte, error) {
	if now.Before(minTime) || now.After(maxTime) {
		return nil, fmt.Errorf("mesh: seal: time %v outside the representable range", now)
	}
	msg.From = self.Public()
	pt := make([]byte, headerLen, 256)
	pt[0] = byte(msg.Kind)
	copy(pt[1:], msg.From[:])
	binary.BigEndian.PutUint64(pt[1+len(msg.From):], uint64(now.UnixNano()))
	pt, err := appendBody(pt, &msg)
	if err != nil {
		return nil, err
	}
	if n := SealOverhead + len(pt); n > MaxSealed {
		return nil, fmt.Errorf("mesh: seal %v: %d bytes sealed, at most %d", msg.Kind, n, MaxSealed)
	}
	sig, err := self.SignWith(signedBytes(keys.Rendezvous, pt), z)
	if err != nil {
		return nil, fmt.Errorf("mesh: seal %v: %w", msg.Kind, err)
	}
	copy(pt[sigOffset:headerLen], sig[:])
	return sealPlaintext(keys.Seal, nonce, pt)
}

// sealPlaintext encrypts an encoded plaintext: header byte, nonce, then the
// XChaCha20-Poly1305 ciphertext with the header byte as additional data, so
// the header cannot be altered without failing the tag.
func sealPlaintext(key [32]byte, nonce [NonceSize]byte, pt []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(key[:])
	if err != nil {
		return nil, fmt.Errorf("mesh: seal: %w", err)
	}
	out := make([]byte, 0, SealOverhead+len(pt))
	out = append(out, SealedHeader)
	out = append(out, nonce[:]...)
	return aead.Seal(out, nonce[:], pt, out[:1]), nil
}

// Open authenticates and decodes a sealed message: the mesh key (the sender
// holds the secret) and the sender's signature (the sender holds From's
// private key). It checks only what the bytes themselves can prove; replay,
// staleness and the relay-reported sender are Members.Observe's job.
func Open(keys Keys, b []byte) (Message, error) {
	switch {
	case len(b) > MaxSealed:
		return Message{}, fmt.Errorf("mesh: open: %w: %d bytes, at most %d", ErrTooLarge, len(b), MaxSealed)
	case len(b) == 0 || b[0] != SealedHeader:
		return Message{}, fmt.Errorf("mesh: open: %w: first byte is not 0x%02X", ErrNotSealed, SealedHeader)
	case len(b) < MinSealed:
		return Message{}, fmt.Errorf("mesh: open: %w: %d bytes, at least %d", ErrNotSealed, len(b), MinSealed)
	}
	aead, err := chacha20poly1305.NewX(keys.Seal[:])
	if err != nil {
		return Message{}, fmt.Errorf("mesh: open: %w", err)
	}
	nonce := b[1 : 1+NonceSize]
	pt, err := aead.Open(nil, nonce, b[1+NonceSize:], b[:1])
	if err != nil {
		return Message{}, fmt.Errorf("mesh: open: %w", ErrNotForThisMesh)
	}
	m, err := parsePlaintext(keys.Rendezvous, pt)
	if err != nil {
		return Message{}, fmt.Errorf("mesh: open: %w", err)
	}
	return m, nil
}
