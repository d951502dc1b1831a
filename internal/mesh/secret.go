package mesh

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Generated secrets. "plurenet key generate" prints GeneratedPrefix, then
// base64url without padding (RFC 4648 section 5) of 32 random bytes and a
// 4-byte checksum: 55 characters in all. The prefix lets every member
// recognise a generated secret and skip the stretching that a human-chosen
// one needs; the checksum turns a mistyped or truncated secret into an
// error instead of a node that silently derives another mesh.
const (
	GeneratedPrefix     = "pnsec1_"
	generatedRandom     = 32
	generatedChecksum   = 4
	generatedEncodedLen = (generatedRandom + generatedChecksum) * 4 / 3 // 36 bytes, no padding: 48 characters
	checksumLabel       = "plurenet secret checksum"
)

// Stretching of every other secret with Argon2id (RFC 9106), so that a
// guess at a human-chosen secret costs real work: the relay operator sees
// the rendezvous and the admission public key, both deterministic functions
// of (topic, secret), and could otherwise test guesses at HKDF speed. The
// parameters are RFC 9106 section 4's second recommended option (the
// "uniformly safe" one for memory-constrained settings): 3 passes over
// 64 MiB with 4 lanes. Measured on the 2-core development machine: about
// 0.1-0.3 s, once at start (docs/protocol.md §3.2 has the figures).
const (
	StretchTime      = 3
	StretchMemoryKiB = 64 * 1024
	StretchThreads   = 4
	stretchLabel     = "plurenet v2 stretch"
)

// SecretKind says how a secret was turned into keying material.
type SecretKind int

const (
	// SecretOpen is the empty secret: an open mesh, stretched like a
	// human-chosen secret (which only slows down guessing the topic name).
	SecretOpen SecretKind = iota
	// SecretHuman is any secret not in the generated format, including
	// every secret made before the format existed: stretched with Argon2id.
	SecretHuman
	// SecretGenerated is a secret in the generated format: its 32 random
	// bytes are used as they are.
	SecretGenerated
)

func (k SecretKind) String() string {
	switch k {
	case SecretOpen:
		return "open (no secret)"
	case SecretHuman:
		return "chosen (stretched)"
	case SecretGenerated:
		return "generated"
	}
	return fmt.Sprintf("SecretKind(%d)", int(k))
}

// ErrBadGenerated is returned for a secret that starts with GeneratedPrefix
// but is not a valid generated secret.
var ErrBadGenerated = errors.New("mesh secret starts with " + GeneratedPrefix + " but is not a valid generated secret: it was mistyped or cut short; copy it again from where it was made (\"plurenet key generate\")")

// Stretched is a mesh secret reduced to 32 bytes of keying material: the
// input of DeriveKeys. It exists so that the costly step runs once, at start.
type Stretched [32]byte

// GenerateSecret returns a new random mesh secret in the generated format.
func GenerateSecret() (string, error) {
	var b [generatedRandom]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("mesh: reading randomness: %w", err)
	}
	return encodeGenerated(b), nil
}

func encodeGenerated(b [generatedRandom]byte) string {
	sum := generatedSum(b[:])
	return GeneratedPrefix + base64.RawURLEncoding.EncodeToString(append(b[:], sum[:]...))
}

// generatedSum is the checksum of a generated secret's random bytes.
func generatedSum(random []byte) [generatedChecksum]byte {
	h := sha256.Sum256(append([]byte(checksumLabel), random...))
	var sum [generatedChecksum]byte
	copy(sum[:], h[:])
	return sum
}

// ClassifySecret says how secret will be treated. A secret is generated
// exactly when it starts with GeneratedPrefix; such a secret must then be
// 48 characters of base64url (no padding, canonical) decoding to 32 bytes
// and their checksum, else ErrBadGenerated. The empty secret is SecretOpen;
// anything else SecretHuman. For a generated secret it also returns the 32
// random bytes. Every member classifies the same bytes the same way, so all
// derive the same keys.
func ClassifySecret(secret string) (SecretKind, [generatedRandom]byte, error) {
	var random [generatedRandom]byte
	body, ok := strings.CutPrefix(secret, GeneratedPrefix)
	switch {
	case secret == "":
		return SecretOpen, random, nil
	case !ok:
		return SecretHuman, random, nil
	case len(body) != generatedEncodedLen:
		return SecretGenerated, random, ErrBadGenerated
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(body)
	if err != nil || len(raw) != generatedRandom+generatedChecksum {
		return SecretGenerated, random, ErrBadGenerated
	}
	if sum := generatedSum(raw[:generatedRandom]); !bytes.Equal(sum[:], raw[generatedRandom:]) {
		return SecretGenerated, random, ErrBadGenerated
	}
	copy(random[:], raw)
	return SecretGenerated, random, nil
}

// StretchSecret turns a mesh secret into the keying material DeriveKeys
// takes: a generated secret's 32 random bytes as they are; any other secret,
// the empty one included, through
//
//	Argon2id(password = secret, salt = "plurenet v2 stretch" || topic ID,
//	         t = StretchTime, m = StretchMemoryKiB, p = StretchThreads, 32 bytes)
//
// which takes a few hundred milliseconds and 64 MiB: call it once. The topic
// ID in the salt means one precomputed dictionary serves one topic only.
func StretchSecret(topicID [TopicSize]byte, secret string) (Stretched, SecretKind, error) {
	kind, random, err := ClassifySecret(secret)
	if err != nil {
		return Stretched{}, kind, err
	}
	if kind == SecretGenerated {
		return random, kind, nil
	}
	salt := append([]byte(stretchLabel), topicID[:]...)
	var s Stretched
	copy(s[:], argon2.IDKey([]byte(secret), salt, StretchTime, StretchMemoryKiB, StretchThreads, uint32(len(s))))
	// Argon2's 64 MiB are garbage now, but the GC sets its next goal at
	// twice the heap it last found live, which may have included them:
	// a node under load would then grow its heap (and RSS) past 130 MiB
	// before collecting again. Collect now and hand the pages back.
	debug.FreeOSMemory()
	return s, kind, nil
}
