package owner

import (
	"fmt"
	"slices"

	"github.com/plures/plurenet/internal/nodekey"
)

// Revocation list limits, so that a list fits MaxDocumentBody: 160 grants
// and 32 keys is 3,588 bytes with the counts. A personal mesh that needs
// more rotates its secret and re-invites (docs/protocol.md 4.4).
const (
	MaxRevokedGrants = 160
	MaxRevokedKeys   = 32
)

// Revocations is the owner's list of grants and keys that are no longer
// members. Each version carries the whole list, so a member that was
// offline needs only the newest one.
type Revocations struct {
	Grants []GrantID
	Keys   []nodekey.Public
}

// Revokes reports whether a certificate for grant id and key is revoked. A
// nil list revokes nothing.
func (r *Revocations) Revokes(id GrantID, key nodekey.Public) bool {
	if r == nil {
		return false
	}
	return slices.Contains(r.Grants, id) || slices.Contains(r.Keys, key)
}

// Marshal encodes the list as a document body: grant count (2) | grants
// (16 each) | key count (2) | keys (32 each).
func (r *Revocations) Marshal() ([]byte, error) {
	if len(r.Grants) > MaxRevokedGrants || len(r.Keys) > MaxRevokedKeys {
		return nil, fmt.Errorf("revocations: %d grants and %d keys, at most %d and %d; rotate the secret and re-invite instead",
			len(r.Grants), len(r.Keys), MaxRevokedGrants, MaxRevokedKeys)
	}
	b := appendUint16(nil, len(r.Grants))
	for _, g := range r.Grants {
		b = append(b, g[:]...)
	}
	b = appendUint16(b, len(r.Keys))
	for _, k := range r.Keys {
		b = append(b, k[:]...)
	}
	return b, nil
}

// ParseRevocations decodes a revocation document body.
func ParseRevocations(body []byte) (Revocations, error) {
	rd := reader{b: body}
	var r Revocations
	n := rd.uint16("revoked grant count")
	if rd.err == nil && n > MaxRevokedGrants {
		rd.fail("%d revoked grants, at most %d", n, MaxRevokedGrants)
	}
	for i := 0; i < n && rd.err == nil; i++ {
		var id GrantID
		copy(id[:], rd.bytes(GrantIDSize, "revoked grant"))
		r.Grants = append(r.Grants, id)
	}
	n = rd.uint16("revoked key count")
	if rd.err == nil && n > MaxRevokedKeys {
		rd.fail("%d revoked keys, at most %d", n, MaxRevokedKeys)
	}
	for i := 0; i < n && rd.err == nil; i++ {
		var k nodekey.Public
		copy(k[:], rd.bytes(nodekey.Size, "revoked key"))
		r.Keys = append(r.Keys, k)
	}
	if err := rd.end("revocations"); err != nil {
		return Revocations{}, err
	}
	return r, nil
}
