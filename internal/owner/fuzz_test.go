package owner

import (
	"bytes"
	"testing"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
)

// The decoders read bytes from other members (certificates in
// announcements, documents spread through the mesh) and from users
// (tokens, policy files): none may panic, and whatever decodes must encode
// back to the same bytes, so one signed encoding has one meaning.

func FuzzParseCertificate(f *testing.F) {
	own := testOwner(f, 7)
	sg, _ := own.SignGrant(testGrant())
	f.Add(AppendCertificate(nil, &Certificate{Grant: sg, Key: nodekey.Public{1}}))
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCertificate(b)
		if err != nil {
			return
		}
		if again := AppendCertificate(nil, &c); !bytes.Equal(again, b) {
			t.Fatalf("re-encoded %x, read %x", again, b)
		}
		raw, err := appendGrant(nil, &c.Grant.Grant)
		if err != nil || !bytes.Equal(raw, c.Grant.Raw) {
			t.Fatalf("grant re-encodes as %x (%v), signed bytes %x", raw, err, c.Grant.Raw)
		}
	})
}

func FuzzParseDocument(f *testing.F) {
	own := testOwner(f, 7)
	rv := Revocations{Grants: []GrantID{{1}}, Keys: []nodekey.Public{{2}}}
	body, _ := rv.Marshal()
	d, _ := own.SignDocument(KindRevocations, mesh.TopicID("home"), 1, body)
	f.Add(d.Append(nil))
	pd, _ := own.SignDocument(KindPolicy, mesh.TopicID("home"), 2, []byte(`{"allow":[{"from":"*","to":"*","ports":["*"]}]}`))
	f.Add(pd.Append(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDocument(b)
		if err != nil {
			return
		}
		if again := d.Append(nil); !bytes.Equal(again, b) {
			t.Fatalf("re-encoded %x, read %x", again, b)
		}
		switch d.Kind {
		case KindRevocations:
			if r, err := ParseRevocations(d.Body); err == nil {
				if again, err := r.Marshal(); err != nil || !bytes.Equal(again, d.Body) {
					t.Fatalf("revocations re-encode as %x (%v), read %x", again, err, d.Body)
				}
			}
		case KindRotation:
			if r, err := ParseRotation(d.Body); err == nil {
				if again, err := r.Marshal(); err != nil || !bytes.Equal(again, d.Body) {
					t.Fatalf("rotation re-encodes as %x (%v), read %x", again, err, d.Body)
				}
			}
		case KindPolicy:
			if p, err := ParsePolicy(d.Body); err == nil {
				p.Allows(Member{Name: "a", Tags: []string{"x"}}, Member{Name: "b"}, ProtoTCP, 22)
			}
		}
	})
}

func FuzzParseInvite(f *testing.F) {
	own := testOwner(f, 7)
	sg, _ := own.SignGrant(testGrant())
	inv := Invite{Topic: "home", Secret: []byte("s"), Relays: []string{"ws://127.0.0.1:1"}, Owner: own.Public(), Grant: sg}
	tok, _ := inv.Token()
	f.Add(tok)
	f.Add("pninv1.AQ")
	f.Fuzz(func(t *testing.T, s string) {
		inv, err := ParseInvite(s)
		if err != nil {
			return
		}
		if _, err := inv.Token(); err != nil {
			t.Fatalf("accepted invite does not re-encode: %v", err)
		}
	})
}
