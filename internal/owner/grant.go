package owner

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
)

// Grant limits. A name is a member name (mesh.ValidName, so it is also a
// DNS label in practice); 16 tags of 32 bytes are plenty for access rules
// on a personal mesh and keep a certificate well under the sealed-message
// limit (mesh.MaxSealed) beside an announcement.
const (
	MaxTags   = 16
	MaxTagLen = 32
	// GrantIDSize is the size of a grant's random identifier.
	GrantIDSize = 16
)

const (
	labelGrant   = "plurenet v1 owner grant"
	grantVersion = 1

	grantFlagMultiUse = 0x01
	grantFlagPinV4    = 0x02
)

// GrantID names one grant. It is random, so two grants never share it.
type GrantID [GrantIDSize]byte

// Grant is what the owner lets one member be.
type Grant struct {
	ID GrantID
	// Topic is the mesh's topic ID: a grant for one mesh is worthless in
	// another.
	Topic [mesh.TopicSize]byte
	// Name is the member's name; unique in the mesh by the owner's word.
	Name string
	// Tags are the labels access rules select members by.
	Tags []string
	// V4 is the member's pinned IPv4, or the zero Addr for one derived from
	// its key as in an open mesh.
	V4 netip.Addr
	// NotAfter ends the membership: members refuse the certificate after
	// it. Zero means no expiry (revocation ends it).
	NotAfter time.Time
	// MultiUse lets several node keys enrol with this grant (a fleet of
	// identical machines). Single use by default: then one key wins (see
	// Winner) and the others are refused.
	MultiUse bool
}

// ValidTag reports whether s may be a tag: lower-case letters, digits and
// '-', 1 to MaxTagLen bytes, so it reads the same in a policy file.
func ValidTag(s string) error {
	if len(s) == 0 || len(s) > MaxTagLen {
		return fmt.Errorf("tag %q: length %d, want 1 to %d", s, len(s), MaxTagLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return fmt.Errorf("tag %q: byte %d: only a-z, 0-9 and '-' are allowed", s, i)
		}
	}
	return nil
}

// NewGrantID returns a random grant ID.
func NewGrantID() (GrantID, error) {
	var id GrantID
	if _, err := rand.Read(id[:]); err != nil {
		return id, fmt.Errorf("grant id: %w", err)
	}
	return id, nil
}

func (g *Grant) validate() error {
	if g.Name == "" {
		return errors.New("grant: a name is required")
	}
	if err := mesh.ValidName(g.Name); err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	if len(g.Tags) > MaxTags {
		return fmt.Errorf("grant: %d tags, at most %d", len(g.Tags), MaxTags)
	}
	seen := make(map[string]bool, len(g.Tags))
	for _, t := range g.Tags {
		if err := ValidTag(t); err != nil {
			return fmt.Errorf("grant: %w", err)
		}
		if seen[t] {
			return fmt.Errorf("grant: tag %q given twice", t)
		}
		seen[t] = true
	}
	if g.V4.IsValid() && !g.V4.Is4() {
		return fmt.Errorf("grant: pinned address %v is not IPv4", g.V4)
	}
	if !g.NotAfter.IsZero() && g.NotAfter.Unix() <= 0 {
		return fmt.Errorf("grant: expiry %v is before 1970", g.NotAfter)
	}
	return nil
}

// appendGrant writes: version (1) | id (16) | topic (32) | not-after Unix
// seconds, 0 = none (8) | flags (1) | IPv4 (4, zero unless pinned) | name
// (1 + n) | tag count (1) | tags (1 + n each).
func appendGrant(b []byte, g *Grant) ([]byte, error) {
	if err := g.validate(); err != nil {
		return nil, err
	}
	b = append(b, grantVersion)
	b = append(b, g.ID[:]...)
	b = append(b, g.Topic[:]...)
	var na uint64
	if !g.NotAfter.IsZero() {
		na = uint64(g.NotAfter.Unix())
	}
	b = appendUint64(b, na)
	var flags byte
	if g.MultiUse {
		flags |= grantFlagMultiUse
	}
	var v4 [4]byte
	if g.V4.IsValid() {
		flags |= grantFlagPinV4
		v4 = g.V4.As4()
	}
	b = append(b, flags)
	b = append(b, v4[:]...)
	b = appendShort(b, g.Name)
	b = append(b, byte(len(g.Tags)))
	for _, t := range g.Tags {
		b = appendShort(b, t)
	}
	return b, nil
}

func readGrant(r *reader) Grant {
	var g Grant
	if v := r.byte("grant version"); r.err == nil && v != grantVersion {
		r.fail("grant version %d, this build reads %d", v, grantVersion)
	}
	copy(g.ID[:], r.bytes(GrantIDSize, "grant id"))
	copy(g.Topic[:], r.bytes(mesh.TopicSize, "grant topic"))
	if na := r.uint64("grant expiry"); na != 0 {
		if na > 1<<40 {
			r.fail("grant expiry %d is out of range", na)
		}
		g.NotAfter = time.Unix(int64(na), 0).UTC()
	}
	flags := r.byte("grant flags")
	if flags&^(grantFlagMultiUse|grantFlagPinV4) != 0 {
		r.fail("grant flags %#x: unknown bits", flags)
	}
	g.MultiUse = flags&grantFlagMultiUse != 0
	v4 := r.bytes(4, "grant IPv4")
	if flags&grantFlagPinV4 != 0 && v4 != nil {
		g.V4 = netip.AddrFrom4([4]byte(v4))
	}
	g.Name = r.short(mesh.MaxNameLen, "grant name")
	n := int(r.byte("grant tag count"))
	if r.err == nil && n > MaxTags {
		r.fail("grant with %d tags, at most %d", n, MaxTags)
	}
	for i := 0; i < n && r.err == nil; i++ {
		g.Tags = append(g.Tags, r.short(MaxTagLen, "grant tag"))
	}
	if r.err == nil {
		if err := g.validate(); err != nil {
			r.fail("%v", err)
		}
	}
	return g
}

// SignedGrant is a grant with the owner's signature over its encoding.
type SignedGrant struct {
	Grant
	// Raw is the signed encoding, kept so the signature is checked over the
	// exact bytes received.
	Raw []byte
	Sig [ed25519.SignatureSize]byte
}

// SignGrant signs g with the owner key.
func (k Key) SignGrant(g Grant) (SignedGrant, error) {
	raw, err := appendGrant(nil, &g)
	if err != nil {
		return SignedGrant{}, err
	}
	sg := SignedGrant{Grant: g, Raw: raw}
	copy(sg.Sig[:], k.sign(labelGrant, raw))
	return sg, nil
}

// append writes the grant's length (2), encoding and signature (64).
func (sg *SignedGrant) append(b []byte) []byte {
	b = appendUint16(b, len(sg.Raw))
	b = append(b, sg.Raw...)
	return append(b, sg.Sig[:]...)
}

// maxGrantLen bounds one encoded grant: the fixed part, a name and every tag
// at their limits.
const maxGrantLen = 1 + GrantIDSize + mesh.TopicSize + 8 + 1 + 4 + 1 + mesh.MaxNameLen + 1 + MaxTags*(1+MaxTagLen)

func readSignedGrant(r *reader) SignedGrant {
	var sg SignedGrant
	n := r.uint16("grant length")
	if r.err == nil && n > maxGrantLen {
		r.fail("grant of %d bytes, at most %d", n, maxGrantLen)
	}
	raw := r.bytes(n, "grant")
	copy(sg.Sig[:], r.bytes(ed25519.SignatureSize, "grant signature"))
	if r.err != nil {
		return sg
	}
	sg.Raw = append([]byte(nil), raw...)
	gr := reader{b: sg.Raw}
	sg.Grant = readGrant(&gr)
	if err := gr.end("grant"); err != nil {
		r.err = err
	}
	return sg
}

// Verify checks the owner's signature and that the grant is for topic.
func (sg *SignedGrant) Verify(owner PublicKey, topic [mesh.TopicSize]byte) error {
	if err := owner.verify(labelGrant, sg.Raw, sg.Sig[:]); err != nil {
		return fmt.Errorf("grant %q: %w", sg.Name, err)
	}
	if sg.Topic != topic {
		return fmt.Errorf("grant %q: issued for another mesh", sg.Name)
	}
	return nil
}

// Certificate is a member's proof of membership: an owner-signed grant and
// the node key it is bound to. The binding itself is not signed: a grant
// is a bearer token until it is used, and what proves the key's holder is
// presenting it is the sealed message's sender signature (docs/protocol.md
// 2.3), which only the holder of Key can make.
type Certificate struct {
	Grant SignedGrant
	Key   nodekey.Public
}

// AppendCertificate writes a certificate: signed grant, then node key (32).
func AppendCertificate(b []byte, c *Certificate) []byte {
	b = c.Grant.append(b)
	return append(b, c.Key[:]...)
}

// ParseCertificate decodes a certificate; it checks no signature.
func ParseCertificate(b []byte) (Certificate, error) {
	r := reader{b: b}
	var c Certificate
	c.Grant = readSignedGrant(&r)
	copy(c.Key[:], r.bytes(nodekey.Size, "certificate key"))
	if err := r.end("certificate"); err != nil {
		return Certificate{}, err
	}
	return c, nil
}

// Errors of Certificate.Check.
var (
	ErrExpired = errors.New("owner: certificate expired")
	ErrRevoked = errors.New("owner: certificate revoked")
)

// Check reports whether c makes its key a member at now: the owner signed
// the grant for this mesh, it has not expired, and neither the grant nor
// the key is revoked (revoked may be nil). Whether another key won a
// single-use grant is Winner's question, answered over all certificates.
func (c *Certificate) Check(owner PublicKey, topic [mesh.TopicSize]byte, revoked *Revocations, now time.Time) error {
	if err := c.Grant.Verify(owner, topic); err != nil {
		return err
	}
	if !c.Grant.NotAfter.IsZero() && now.After(c.Grant.NotAfter) {
		return fmt.Errorf("%w: %q ended %v", ErrExpired, c.Grant.Name, c.Grant.NotAfter)
	}
	if revoked.Revokes(c.Grant.ID, c.Key) {
		return fmt.Errorf("%w: %q (key %s)", ErrRevoked, c.Grant.Name, c.Key.ShortString())
	}
	return nil
}

// Winner decides which of two keys that present the same single-use grant
// keeps it: the lower key, byte-wise. Every member computes the same answer
// from the same two certificates, whatever order it saw them in. The rule
// is for agreement, not judgment: who enrolled first cannot be proven
// without a server, so a stolen, unused token still lets its thief in
// until the owner revokes the key or the grant (status shows the conflict).
func Winner(a, b nodekey.Public) nodekey.Public {
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return a
			}
			return b
		}
	}
	return a
}
