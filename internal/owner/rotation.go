package owner

import (
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/relayproto"
)

// Rotation document limits. A generated secret is 55 characters; sealed
// to a member's key with an anonymous NaCl box (32-byte ephemeral key and
// 16-byte tag) it is 103 bytes, 135 with the member's key: 26 entries fit
// MaxDocumentBody with the 42-byte header. A mesh of more members re-invites
// instead (docs/protocol.md 4.5).
const (
	rotationSecretLen  = len(mesh.GeneratedPrefix) + 48
	rotationSealedLen  = rotationSecretLen + box.AnonymousOverhead
	rotationEntryLen   = nodekey.Size + rotationSealedLen
	rotationHeaderLen  = 8 + relayproto.RendezvousSize + 2
	MaxRotationMembers = (MaxDocumentBody - rotationHeaderLen) / rotationEntryLen
)

// Rotation is the owner's hand-over of a new mesh secret: each entry is
// the secret sealed to one member's node key, so only the members named
// can read it; a revoked member is simply not named. Members switch to the
// keys of the new secret at Activate, all at the same moment by their
// clocks.
type Rotation struct {
	Activate time.Time // whole seconds
	// Rendezvous is the new secret's relay rendezvous: a member the
	// rotation does not name, invited after it with the new secret
	// already, sees that it runs this rotation. The relay operator sees
	// it anyway; admission to it takes the secret.
	Rendezvous relayproto.Rendezvous
	Entries    []RotationEntry
}

// RotationEntry is the new secret sealed to one member.
type RotationEntry struct {
	Key    nodekey.Public
	Sealed []byte // box.SealAnonymous(secret, Key)
}

// NewRotation seals secret (a generated secret, mesh.GenerateSecret) of
// the mesh of topic to each of members.
func NewRotation(topic [mesh.TopicSize]byte, secret string, activate time.Time, members []nodekey.Public) (Rotation, error) {
	stretched, kind, err := mesh.StretchSecret(topic, secret)
	if err != nil || kind != mesh.SecretGenerated {
		return Rotation{}, errors.New("rotation: the new secret must be a generated one (mesh.GenerateSecret)")
	}
	if len(members) == 0 {
		return Rotation{}, errors.New("rotation: no member to hand the secret to")
	}
	if len(members) > MaxRotationMembers {
		return Rotation{}, fmt.Errorf("rotation: %d members, at most %d fit one owner document; re-invite the members instead", len(members), MaxRotationMembers)
	}
	r := Rotation{Activate: activate.Truncate(time.Second), Rendezvous: mesh.DeriveKeys(topic, stretched).Rendezvous}
	for _, k := range members {
		if slices.ContainsFunc(r.Entries, func(e RotationEntry) bool { return e.Key == k }) {
			continue
		}
		pub := [32]byte(k)
		sealed, err := box.SealAnonymous(nil, []byte(secret), &pub, rand.Reader)
		if err != nil {
			return Rotation{}, fmt.Errorf("rotation: sealing to %s: %w", k.ShortString(), err)
		}
		r.Entries = append(r.Entries, RotationEntry{Key: k, Sealed: sealed})
	}
	return r, nil
}

// ErrNotInRotation is returned by Open to a member the rotation does not
// name: the owner left it out (revoked, or unknown to the owner when it
// rotated).
var ErrNotInRotation = errors.New("rotation: this node is not among the members the owner handed the new secret to")

// Open returns the secret sealed to priv's key.
func (r *Rotation) Open(priv nodekey.Private) (string, error) {
	pub := priv.Public()
	i := slices.IndexFunc(r.Entries, func(e RotationEntry) bool { return e.Key == pub })
	if i < 0 {
		return "", ErrNotInRotation
	}
	pk, sk := [32]byte(pub), [32]byte(priv)
	b, ok := box.OpenAnonymous(nil, r.Entries[i].Sealed, &pk, &sk)
	if !ok {
		return "", errors.New("rotation: the entry for this node does not open with its key")
	}
	secret := string(b)
	if kind, _, err := mesh.ClassifySecret(secret); err != nil || kind != mesh.SecretGenerated {
		return "", errors.New("rotation: the entry for this node holds no generated secret")
	}
	return secret, nil
}

// Marshal encodes the rotation as a document body: activation time (8,
// Unix seconds) | rendezvous (32) | entry count (2) | entries, each node
// key (32) | sealed secret (103).
func (r *Rotation) Marshal() ([]byte, error) {
	if len(r.Entries) > MaxRotationMembers {
		return nil, fmt.Errorf("rotation: %d entries, at most %d", len(r.Entries), MaxRotationMembers)
	}
	b := appendUint64(nil, uint64(r.Activate.Unix()))
	b = append(b, r.Rendezvous[:]...)
	b = appendUint16(b, len(r.Entries))
	for _, e := range r.Entries {
		if len(e.Sealed) != rotationSealedLen {
			return nil, fmt.Errorf("rotation: entry for %s is %d bytes, want %d", e.Key.ShortString(), len(e.Sealed), rotationSealedLen)
		}
		b = append(b, e.Key[:]...)
		b = append(b, e.Sealed...)
	}
	return b, nil
}

// ParseRotation decodes a rotation document body.
func ParseRotation(body []byte) (Rotation, error) {
	rd := reader{b: body}
	var r Rotation
	at := rd.uint64("rotation activation time")
	if rd.err == nil && at > 1<<40 {
		rd.fail("rotation activation time %d out of range", at)
	}
	r.Activate = time.Unix(int64(at), 0)
	copy(r.Rendezvous[:], rd.bytes(relayproto.RendezvousSize, "rotation rendezvous"))
	n := rd.uint16("rotation entry count")
	if rd.err == nil && (n == 0 || n > MaxRotationMembers) {
		rd.fail("%d rotation entries, want 1 to %d", n, MaxRotationMembers)
	}
	for i := 0; i < n && rd.err == nil; i++ {
		var e RotationEntry
		copy(e.Key[:], rd.bytes(nodekey.Size, "rotation entry key"))
		e.Sealed = append([]byte(nil), rd.bytes(rotationSealedLen, "rotation entry secret")...)
		r.Entries = append(r.Entries, e)
	}
	if err := rd.end("rotation"); err != nil {
		return Rotation{}, err
	}
	return r, nil
}
