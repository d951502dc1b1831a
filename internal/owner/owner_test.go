package owner

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/testkit"
)

func testOwner(t testing.TB, seedByte byte) Key {
	t.Helper()
	k, err := KeyFromSeed(bytes.Repeat([]byte{seedByte}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testGrant() Grant {
	return Grant{
		ID:       GrantID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		Topic:    mesh.TopicID("home"),
		Name:     "laptop",
		Tags:     []string{"dev", "laptops"},
		V4:       netip.MustParseAddr("100.64.0.5"),
		NotAfter: time.Unix(1893456000, 0).UTC(), // 2030-01-01
	}
}

func TestCertificateRoundTripAndCheck(t *testing.T) {
	own := testOwner(t, 7)
	sg, err := own.SignGrant(testGrant())
	if err != nil {
		t.Fatal(err)
	}
	key := testkit.Key(t).Public()
	cert := Certificate{Grant: sg, Key: key}
	b := AppendCertificate(nil, &cert)
	back, err := ParseCertificate(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.Key != key || back.Grant.Name != "laptop" || back.Grant.V4 != testGrant().V4 ||
		strings.Join(back.Grant.Tags, ",") != "dev,laptops" || !back.Grant.NotAfter.Equal(testGrant().NotAfter) {
		t.Fatalf("round trip: %+v", back)
	}
	topic := mesh.TopicID("home")
	now := time.Unix(1800000000, 0)
	if err := back.Check(own.Public(), topic, nil, now); err != nil {
		t.Fatalf("valid certificate refused: %v", err)
	}

	other := testOwner(t, 8)
	tampered := bytes.Clone(b)
	tampered[2+1+GrantIDSize+mesh.TopicSize+8+1+4+1] ^= 0x20 // first byte of the name: "laptop" -> "Laptop"
	tc, err := ParseCertificate(tampered)
	if err != nil {
		t.Fatal(err)
	}
	otherMesh := testGrant()
	otherMesh.Topic = mesh.TopicID("work")
	sgOther, err := own.SignGrant(otherMesh)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		cert    Certificate
		owner   PublicKey
		revoked *Revocations
		now     time.Time
		want    error
	}{
		{"signed by another owner", back, other.Public(), nil, now, ErrBadSignature},
		{"name altered", tc, own.Public(), nil, now, ErrBadSignature},
		{"expired", back, own.Public(), nil, testGrant().NotAfter.Add(time.Second), ErrExpired},
		{"grant revoked", back, own.Public(), &Revocations{Grants: []GrantID{testGrant().ID}}, now, ErrRevoked},
		{"key revoked", back, own.Public(), &Revocations{Keys: []nodekey.Public{key}}, now, ErrRevoked},
		{"another mesh", Certificate{Grant: sgOther, Key: key}, own.Public(), nil, now, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.cert.Check(c.owner, topic, c.revoked, c.now)
			if c.want == nil {
				if err == nil || !strings.Contains(err.Error(), "another mesh") {
					t.Fatalf("Check = %v, want an error about another mesh", err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("Check = %v, want %v", err, c.want)
			}
		})
	}
}

func TestGrantRejects(t *testing.T) {
	own := testOwner(t, 7)
	mut := func(f func(g *Grant)) Grant { g := testGrant(); f(&g); return g }
	for _, c := range []struct {
		name string
		g    Grant
	}{
		{"no name", mut(func(g *Grant) { g.Name = "" })},
		{"bad name", mut(func(g *Grant) { g.Name = "a b" })},
		{"upper-case tag", mut(func(g *Grant) { g.Tags = []string{"Dev"} })},
		{"duplicate tag", mut(func(g *Grant) { g.Tags = []string{"dev", "dev"} })},
		{"too many tags", mut(func(g *Grant) {
			g.Tags = nil
			for i := range MaxTags + 1 {
				g.Tags = append(g.Tags, "t"+string(rune('a'+i)))
			}
		})},
		{"IPv6 pin", mut(func(g *Grant) { g.V4 = netip.MustParseAddr("fd00::1") })},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := own.SignGrant(c.g); err == nil {
				t.Fatal("signed, want an error")
			}
		})
	}
}

func TestWinnerIsOrderIndependent(t *testing.T) {
	a, b := testkit.Key(t).Public(), testkit.Key(t).Public()
	if Winner(a, b) != Winner(b, a) {
		t.Fatal("Winner depends on argument order")
	}
	if w := Winner(a, b); w != a && w != b {
		t.Fatal("Winner returned neither key")
	}
}

func TestDocumentsAndVersions(t *testing.T) {
	own := testOwner(t, 7)
	topic := mesh.TopicID("home")
	rv := Revocations{Grants: []GrantID{{9}}, Keys: []nodekey.Public{testkit.Key(t).Public()}}
	body, err := rv.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	d, err := own.SignDocument(KindRevocations, topic, 3, body)
	if err != nil {
		t.Fatal(err)
	}
	b := d.Append(nil)
	back, err := ParseDocument(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Verify(own.Public(), topic); err != nil {
		t.Fatal(err)
	}
	got, err := ParseRevocations(back.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Revokes(GrantID{9}, nodekey.Public{}) || !got.Revokes(GrantID{}, rv.Keys[0]) || got.Revokes(GrantID{8}, nodekey.Public{1}) {
		t.Fatalf("revocations decoded as %+v", got)
	}
	bumped := bytes.Clone(b)
	bumped[2+mesh.TopicSize+7]++ // version 3 -> 4 without the owner
	bd, err := ParseDocument(bumped)
	if err != nil {
		t.Fatal(err)
	}
	if err := bd.Verify(own.Public(), topic); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("version bumped by a non-owner: Verify = %v, want ErrBadSignature", err)
	}
	if err := back.Verify(testOwner(t, 8).Public(), topic); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("another owner: Verify = %v", err)
	}
	if err := back.Verify(own.Public(), mesh.TopicID("work")); err == nil {
		t.Fatal("document for another mesh verified")
	}
	if _, err := own.SignDocument(KindPolicy, topic, 0, nil); err == nil {
		t.Fatal("version 0 signed")
	}
	if _, err := (&Revocations{Keys: make([]nodekey.Public, MaxRevokedKeys+1)}).Marshal(); err == nil {
		t.Fatal("oversized revocation list marshalled")
	}
}

func TestPolicy(t *testing.T) {
	p, err := ParsePolicy([]byte(`{"allow":[
		{"from":"tag:dev","to":"tag:server","ports":["tcp/22","tcp/5432"]},
		{"from":"*","to":"nas","ports":["udp/5000-5010"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	laptop := Member{Name: "laptop", Tags: []string{"dev"}}
	server := Member{Name: "db", Tags: []string{"server"}}
	nas := Member{Name: "nas"}
	phone := Member{Name: "phone"}
	for _, c := range []struct {
		name     string
		src, dst Member
		proto    uint8
		port     uint16
		want     bool
	}{
		{"dev to server ssh", laptop, server, ProtoTCP, 22, true},
		{"dev to server postgres", laptop, server, ProtoTCP, 5432, true},
		{"dev to server 8000", laptop, server, ProtoTCP, 8000, false},
		{"dev to server udp 22", laptop, server, ProtoUDP, 22, false},
		{"server to dev (no rule back)", server, laptop, ProtoTCP, 22, false},
		{"anyone to nas udp range low", phone, nas, ProtoUDP, 5000, true},
		{"anyone to nas udp range high", phone, nas, ProtoUDP, 5010, true},
		{"anyone to nas udp out of range", phone, nas, ProtoUDP, 5011, false},
		{"ping where a rule exists", laptop, server, ProtoICMP, 0, true},
		{"ping v6 where a rule exists", phone, nas, ProtoICMPv6, 0, true},
		{"ping where no rule exists", phone, server, ProtoICMP, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := p.Allows(c.src, c.dst, c.proto, c.port); got != c.want {
				t.Fatalf("Allows = %v, want %v", got, c.want)
			}
		})
	}
	// The canonical form parses back to the same decisions.
	canon, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	p2, err := ParsePolicy(canon)
	if err != nil {
		t.Fatalf("canonical policy %s does not parse: %v", canon, err)
	}
	if !p2.Allows(laptop, server, ProtoTCP, 22) || p2.Allows(laptop, server, ProtoTCP, 23) {
		t.Fatalf("canonical policy decides differently: %s", canon)
	}
}

func TestPolicyRejects(t *testing.T) {
	for _, c := range []struct{ name, json, want string }{
		{"unknown field", `{"allow":[],"deny":[]}`, "unknown field"},
		{"no allow", `{}`, `no "allow"`},
		{"bad tag", `{"allow":[{"from":"tag:Dev","to":"*","ports":["*"]}]}`, "rule 1"},
		{"empty selector", `{"allow":[{"from":"","to":"*","ports":["*"]}]}`, "empty selector"},
		{"no ports", `{"allow":[{"from":"*","to":"*","ports":[]}]}`, "no ports"},
		{"port zero", `{"allow":[{"from":"*","to":"*","ports":["tcp/0"]}]}`, "1 to 65535"},
		{"reversed range", `{"allow":[{"from":"*","to":"*","ports":["tcp/9-8"]}]}`, "LO <= HI"},
		{"sctp", `{"allow":[{"from":"*","to":"*","ports":["sctp/1"]}]}`, "want"},
		{"two values", `{"allow":[]} {}`, "more than one"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParsePolicy([]byte(c.json))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ParsePolicy = %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestInvite(t *testing.T) {
	own := testOwner(t, 7)
	sg, err := own.SignGrant(testGrant())
	if err != nil {
		t.Fatal(err)
	}
	inv := Invite{Topic: "home", Secret: []byte("s3cret"), Relays: []string{"wss://relay.example.org"}, Owner: own.Public(), Grant: sg}
	tok, err := inv.Token()
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(tok, " \n+/=") {
		t.Fatalf("token %q is not one URL-safe line", tok)
	}
	back, err := ParseInvite(tok)
	if err != nil {
		t.Fatal(err)
	}
	if back.Topic != "home" || string(back.Secret) != "s3cret" || back.Relays[0] != inv.Relays[0] || back.Owner != own.Public() || back.Grant.Name != "laptop" {
		t.Fatalf("invite round trip: %+v", back)
	}
	// An invite for topic "home" whose grant was signed for "work" is refused.
	wrong := inv
	wrong.Topic = "work"
	wt, err := wrong.Token()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseInvite(wt); err == nil {
		t.Fatal("invite whose grant is for another mesh accepted")
	}
	// An owner key swapped in the token does not verify the grant.
	swapped := inv
	swapped.Owner = testOwner(t, 8).Public()
	st, err := swapped.Token()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseInvite(st); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("swapped owner key: %v, want ErrBadSignature", err)
	}
	for _, bad := range []string{"", "pninv1.", "pninv1.!!!", "xyz", tok[:len(tok)-4], tok + "AAAA"} {
		if _, err := ParseInvite(bad); err == nil {
			t.Fatalf("ParseInvite(%q) accepted", bad)
		}
	}
}

func TestOwnerPublicKeyString(t *testing.T) {
	p := testOwner(t, 7).Public()
	back, err := ParsePublicKey(p.String())
	if err != nil || back != p {
		t.Fatalf("ParsePublicKey(%q) = %v, %v", p.String(), back, err)
	}
	for _, bad := range []string{"", "owner:", "owner:AAAA", p.String()[6:]} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Fatalf("ParsePublicKey(%q) accepted", bad)
		}
	}
}
