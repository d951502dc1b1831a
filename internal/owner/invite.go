package owner

import (
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/plures/plurenet/internal/mesh"
)

// Invite limits: a topic name and a secret of up to 255 bytes, four relays
// of up to 512 bytes each. A token then stays under 4 KiB, short enough to
// paste.
const (
	MaxInviteRelays = 4
	MaxRelayURLLen  = 512
	invitePrefix    = "pninv1."
	inviteFormat    = 1
	// maxInviteToken bounds what ParseInvite decodes.
	maxInviteToken = 8 << 10
)

// Invite is everything a new member needs to enrol with no owner online:
// which mesh (topic and secret), where to meet (relays), whom to trust (the
// owner key) and what it may be (a signed grant).
//
// A token holds the mesh secret: whoever reads it can read the mesh's
// sealed messages until the secret is rotated, and, while the grant is
// unused, join. Send it like a password.
type Invite struct {
	Topic  string
	Secret []byte
	Relays []string
	Owner  PublicKey
	Grant  SignedGrant
}

// Token encodes the invite as one line: "pninv1." and unpadded base64url of
// format (1) | topic (1 + n) | secret (1 + n) | relay count (1) | relays
// (2 + n each) | owner key (32) | signed grant.
func (inv *Invite) Token() (string, error) {
	if len(inv.Topic) == 0 || len(inv.Topic) > 255 {
		return "", fmt.Errorf("invite: topic of %d bytes, want 1 to 255", len(inv.Topic))
	}
	if len(inv.Secret) > 255 {
		return "", fmt.Errorf("invite: secret of %d bytes, at most 255", len(inv.Secret))
	}
	if len(inv.Relays) > MaxInviteRelays {
		return "", fmt.Errorf("invite: %d relays, at most %d", len(inv.Relays), MaxInviteRelays)
	}
	b := []byte{inviteFormat}
	b = appendShort(b, inv.Topic)
	b = appendShort(b, string(inv.Secret))
	b = append(b, byte(len(inv.Relays)))
	for _, u := range inv.Relays {
		if len(u) == 0 || len(u) > MaxRelayURLLen {
			return "", fmt.Errorf("invite: relay URL of %d bytes, want 1 to %d", len(u), MaxRelayURLLen)
		}
		b = appendUint16(b, len(u))
		b = append(b, u...)
	}
	b = append(b, inv.Owner[:]...)
	b = inv.Grant.append(b)
	return invitePrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// ParseInvite decodes a token and checks the grant's signature against the
// owner key it carries and the topic it names. (That the owner key is the
// right one is the user's trust in whoever sent the token, as with any
// invitation link.)
func ParseInvite(token string) (Invite, error) {
	token = strings.TrimSpace(token)
	if len(token) > maxInviteToken {
		return Invite{}, fmt.Errorf("invite: token of %d bytes, at most %d", len(token), maxInviteToken)
	}
	rest, ok := strings.CutPrefix(token, invitePrefix)
	if !ok {
		return Invite{}, fmt.Errorf("invite: not a plurenet invite token (want %q…, as `plurenet invite` prints)", invitePrefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return Invite{}, fmt.Errorf("invite: token damaged (base64url): %w; copy the whole line", err)
	}
	r := reader{b: b}
	var inv Invite
	if f := r.byte("invite format"); r.err == nil && f != inviteFormat {
		r.fail("invite format %d, this build reads %d", f, inviteFormat)
	}
	inv.Topic = r.short(255, "invite topic")
	inv.Secret = []byte(r.short(255, "invite secret"))
	n := int(r.byte("invite relay count"))
	if r.err == nil && n > MaxInviteRelays {
		r.fail("%d relays, at most %d", n, MaxInviteRelays)
	}
	for i := 0; i < n && r.err == nil; i++ {
		l := r.uint16("relay URL length")
		if r.err == nil && (l == 0 || l > MaxRelayURLLen) {
			r.fail("relay URL of %d bytes, want 1 to %d", l, MaxRelayURLLen)
		}
		inv.Relays = append(inv.Relays, string(r.bytes(l, "relay URL")))
	}
	copy(inv.Owner[:], r.bytes(len(inv.Owner), "owner key"))
	inv.Grant = readSignedGrant(&r)
	if err := r.end("invite"); err != nil {
		return Invite{}, fmt.Errorf("invite: %w", err)
	}
	if inv.Topic == "" {
		return Invite{}, fmt.Errorf("invite: %w: empty topic", ErrMalformed)
	}
	if err := inv.Grant.Verify(inv.Owner, mesh.TopicID(inv.Topic)); err != nil {
		return Invite{}, fmt.Errorf("invite: %w", err)
	}
	return inv, nil
}
