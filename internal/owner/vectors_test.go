package owner

import (
	"encoding/hex"
	"testing"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
)

// Test vectors of docs/protocol.md 4.7. Ed25519 signatures are
// deterministic (RFC 8032), so every byte is fixed by the inputs.
const (
	vecOwnerPub    = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
	vecCertificate = "0052010102030405060708090a0b0c0d0e0f1060e1e94d1e4de53ee83d75b2ec0d4809432acacb17d318c755749048f9a651cb0000000070dbd8800264400005066c6170746f700203646576076c6170746f7073655ce022165054b94db9d5b37f405a95f43443b222e0f3ae1e7a7344059277c8488310775260317551fe77cbe47ee4fb668876e6720a6a4c25d32fe989ac4e08000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	vecRevocations = "010160e1e94d1e4de53ee83d75b2ec0d4809432acacb17d318c755749048f9a651cb0000000000000001003400010102030405060708090a0b0c0d0e0f100001000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f71bcfb5fafa228343739bf76c7dd6c0f8c2adda4f7b1dafe17b5dccb1b36792e18cb8b0cbe83f09bd215887f247348f1964cb5af3d5532dd156e62350b3e5b0b"
)

func TestVectors(t *testing.T) {
	own := testOwner(t, 7)
	sg, err := own.SignGrant(testGrant())
	if err != nil {
		t.Fatal(err)
	}
	var key nodekey.Public
	for i := range key {
		key[i] = byte(i)
	}
	body, err := (&Revocations{Grants: []GrantID{testGrant().ID}, Keys: []nodekey.Public{key}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := own.SignDocument(KindRevocations, mesh.TopicID("home"), 1, body)
	if err != nil {
		t.Fatal(err)
	}
	pub := own.Public()
	for _, c := range []struct{ name, got, want string }{
		{"owner public key", hex.EncodeToString(pub[:]), vecOwnerPub},
		{"certificate", hex.EncodeToString(AppendCertificate(nil, &Certificate{Grant: sg, Key: key})), vecCertificate},
		{"revocations", hex.EncodeToString(doc.Append(nil)), vecRevocations},
	} {
		if c.got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, c.got, c.want)
		}
	}
}
