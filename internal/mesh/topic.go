// Package mesh holds the pure pieces of plurenet mesh membership: what the
// members of one mesh derive from its topic and secret, how they address each
// other, the sealed messages they exchange through a relay, the membership
// table those messages maintain, and the node's on-disk identity.
//
// Nothing here touches the network: the overlay feeds relay frames in and
// reads membership and addresses out. docs/protocol.md Part 2 is the
// specification; its test vectors are checked by vectors_test.go.
package mesh

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"golang.org/x/crypto/blake2b"
	"golang.org/x/crypto/hkdf"

	"github.com/plures/plurenet/internal/relayproto"
)

// TopicSize is the length of a topic ID.
const TopicSize = 32

// HKDF info labels and hash prefixes. Each derived value has its own label so
// that knowing one output (the relay knows the rendezvous and the admission
// public key; every WireGuard peer config holds the PSK) says nothing about
// another. The version in a label changes whenever its input does: the HKDF
// outputs are "v2" since their keying material became the stretched secret
// (secret.go); the address hashes, whose inputs did not change, stay "v1",
// so a node keeps its addresses across the upgrade.
const (
	labelAdmission = "plurenet v2 admission"
	labelSeal      = "plurenet v2 seal"
	labelPSK       = "plurenet v2 wireguard psk"
	labelDHT       = "plurenet v2 dht"
	labelULA       = "plurenet v1 ula"
	labelV6Host    = "plurenet v1 ipv6 host"
	labelV4Host    = "plurenet v1 ipv4 host"
)

// TopicID returns BLAKE2b-256(name), unkeyed: the derivation PluresDB's Rust
// derive_topic uses, so a plurenet mesh and a PluresDB topic of the same name
// share one ID.
func TopicID(name string) [TopicSize]byte {
	return blake2b.Sum256([]byte(name))
}

// ParseTopicHex parses a topic ID given directly as 64 hex characters (the
// --topic-hex flag), for callers that already hold a derived ID.
func ParseTopicHex(s string) ([TopicSize]byte, error) {
	var id [TopicSize]byte
	s = strings.TrimSpace(s)
	if len(s) != 2*TopicSize {
		return id, fmt.Errorf("topic hex: want %d hex characters, got %d", 2*TopicSize, len(s))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("topic hex: %w", err)
	}
	return id, nil
}

// Keys are the per-mesh secrets every member derives from (topic ID, secret).
type Keys struct {
	// Admission is the mesh's admission key pair: the relay admits a
	// client to Rendezvous only with a signature by it
	// (docs/protocol.md §1.3).
	Admission relayproto.AdmissionKey
	// Rendezvous is the 32-byte hash the relay groups members by: the hash
	// of Admission's public key. With that public key, it is all the relay
	// sees of the mesh.
	Rendezvous relayproto.Rendezvous
	// Seal is the XChaCha20-Poly1305 key of announcements and signaling.
	Seal [32]byte
	// PSK is the WireGuard preshared key between every pair of members.
	PSK [32]byte
	// DHT is the key the mesh's daily Mainline DHT info-hashes are derived
	// from (DHTInfoHash).
	DHT [32]byte
}

// DeriveKeys derives a mesh's keys with HKDF-SHA256 (RFC 5869): salt = the
// topic ID, input keying material = the stretched secret (StretchSecret),
// one info label per output.
//
// Why this shape:
//   - The secret is the only input an attacker lacks, so (stretched) it is
//     the IKM; the topic is public-ish (anyone who knows the name can hash
//     it) and serves as the salt, which binds every output to the topic:
//     the same secret reused on two topics yields unrelated keys, rendezvous
//     included, so the relay cannot link the two meshes.
//   - The relay sees the admission public key and the rendezvous (its
//     hash). The admission key's seed is an HKDF output; HKDF-Expand is a
//     PRF and an Ed25519 public key reveals nothing of its seed, so neither
//     reveals the secret, Seal or PSK; and since the topic ID only enters
//     as a salt, the relay cannot recover the topic either. It can test a
//     guess of (topic, secret), at the cost of one StretchSecret per guess
//     for a human-chosen secret.
//   - Different secrets on one topic give different rendezvous values, so
//     two groups that picked the same topic name never meet on a relay.
//
// An empty secret is allowed and makes an open mesh: all keys then follow
// from the topic alone, and anyone who knows or guesses the topic name can
// join, read announcements and impersonate membership. Callers must warn
// loudly when they run one.
func DeriveKeys(topicID [TopicSize]byte, secret Stretched) Keys {
	prk := hkdf.Extract(sha256.New, secret[:], topicID[:])
	var k Keys
	var seed [32]byte
	expand(prk, labelAdmission, seed[:])
	k.Admission = relayproto.NewAdmissionKey(seed)
	k.Rendezvous = k.Admission.Rendezvous()
	expand(prk, labelSeal, k.Seal[:])
	expand(prk, labelPSK, k.PSK[:])
	expand(prk, labelDHT, k.DHT[:])
	return k
}

func expand(prk []byte, label string, out []byte) {
	r := hkdf.Expand(sha256.New, prk, []byte(label))
	if _, err := io.ReadFull(r, out); err != nil {
		// HKDF-SHA256 yields up to 255*32 bytes; 32 cannot fail.
		panic("mesh: hkdf expand: " + err.Error())
	}
}

// ULAPrefix returns the mesh's IPv6 /48: fd00::/8 followed by 40 bits of
// BLAKE2b-256(labelULA || topic ID), the "fd + 40-bit global ID" of RFC 4193
// section 3.2 with a hash in place of its random number. It depends on the
// topic only (not the secret), so a node's IPv6 is stable across a change of
// the mesh secret; a collision with another site's ULA matters only if the
// two are routed together, which RFC 4193 already accepts as improbable.
func ULAPrefix(topicID [TopicSize]byte) netip.Prefix {
	h := labeledHash(labelULA, topicID[:])
	var a [16]byte
	a[0] = 0xfd
	copy(a[1:6], h[:5])
	return netip.PrefixFrom(netip.AddrFrom16(a), 48)
}

// labeledHash returns BLAKE2b-256(label || parts...). Labels are constants
// and every part but the last has a fixed length, so inputs cannot be
// confused across uses.
func labeledHash(label string, parts ...[]byte) [32]byte {
	h, err := blake2b.New256(nil)
	if err != nil {
		panic("mesh: blake2b: " + err.Error()) // only fails for an oversized key
	}
	h.Write([]byte(label))
	for _, p := range parts {
		h.Write(p)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}
