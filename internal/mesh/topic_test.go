package mesh

import (
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
)

func TestTopicID(t *testing.T) {
	// BLAKE2b-256 reference values (RFC 7693 hash with a 32-byte digest, as
	// computed by coreutils b2sum -l 256).
	for _, c := range []struct{ name, want string }{
		{"", "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"},
		{"abc", "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"},
		{vecTopicName, vecTopicID},
	} {
		id := TopicID(c.name)
		if got := hex.EncodeToString(id[:]); got != c.want {
			t.Errorf("TopicID(%q) = %s, want %s", c.name, got, c.want)
		}
	}
}

func TestParseTopicHex(t *testing.T) {
	for _, c := range []struct {
		name, in string
		ok       bool
	}{
		{"lower", vecTopicID, true},
		{"upper", strings.ToUpper(vecTopicID), true},
		{"surrounding space", " " + vecTopicID + "\n", true},
		{"empty", "", false},
		{"short", vecTopicID[:62], false},
		{"long", vecTopicID + "00", false},
		{"not hex", "zz" + vecTopicID[2:], false},
		{"topic name instead", vecTopicName, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			id, err := ParseTopicHex(c.in)
			if (err == nil) != c.ok {
				t.Fatalf("ParseTopicHex(%q) = %v, want ok=%v", c.in, err, c.ok)
			}
			if c.ok && id != TopicID(vecTopicName) {
				t.Fatalf("ParseTopicHex(%q) = %x", c.in, id)
			}
		})
	}
}

func TestDeriveKeysSeparation(t *testing.T) {
	a := TopicID("team-a")
	b := TopicID("team-b")
	sets := map[string]Keys{
		"a/secret":  DeriveKeys(a, Stretched{1}),
		"a/secret2": DeriveKeys(a, Stretched{2}),
		"a/zero":    DeriveKeys(a, Stretched{}),
		"b/secret":  DeriveKeys(b, Stretched{1}),
		"b/zero":    DeriveKeys(b, Stretched{}),
	}
	// Every derived value differs from every other, across labels, secrets
	// and topics, and none equals the topic ID the relay must not learn.
	seen := map[[32]byte]string{a: "topic a", b: "topic b"}
	for name, k := range sets {
		for label, v := range map[string][32]byte{
			"admission": k.Admission.Public(), "rendezvous": k.Rendezvous, "seal": k.Seal, "psk": k.PSK,
		} {
			if prev, dup := seen[v]; dup {
				t.Errorf("%s %s equals %s", name, label, prev)
			}
			seen[v] = name + " " + label
		}
		if k.Rendezvous != k.Admission.Rendezvous() {
			t.Errorf("%s: rendezvous is not the hash of the admission key", name)
		}
	}
	if DeriveKeys(a, Stretched{1}) != sets["a/secret"] {
		t.Error("DeriveKeys is not deterministic")
	}
}

func TestULAPrefix(t *testing.T) {
	fd := netip.MustParsePrefix("fd00::/8")
	seen := map[netip.Prefix]string{}
	for _, name := range []string{"", "a", "b", vecTopicName, "home"} {
		p := ULAPrefix(TopicID(name))
		if p.Bits() != 48 || !fd.Contains(p.Addr()) || p.Masked() != p {
			t.Errorf("ULAPrefix(%q) = %s, want a masked /48 in fd00::/8", name, p)
		}
		if prev, dup := seen[p]; dup {
			t.Errorf("topics %q and %q share %s", name, prev, p)
		}
		seen[p] = name
	}
}
