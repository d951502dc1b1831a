package mesh

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestClassifySecret(t *testing.T) {
	valid := vecGenerated
	body := strings.TrimPrefix(valid, GeneratedPrefix)
	flip := func(s string, i int) string { // change one base64url character
		c := byte('A')
		if s[i] == 'A' {
			c = 'B'
		}
		return s[:i] + string(c) + s[i+1:]
	}
	for _, c := range []struct {
		name   string
		secret string
		kind   SecretKind
		bad    bool
	}{
		{"empty", "", SecretOpen, false},
		{"human", vecSecret, SecretHuman, false},
		{"v1 generated (43 base64url characters)", "hT1kZ2Tl9QpRCHNzIcUeCKkT3YgT3lG7RXjZzx6hwQI", SecretHuman, false},
		{"prefix elsewhere", "my " + valid, SecretHuman, false},
		{"prefix in another case", strings.ToUpper(GeneratedPrefix) + body, SecretHuman, false},
		{"generated", valid, SecretGenerated, false},
		{"generated, truncated", valid[:len(valid)-1], SecretGenerated, true},
		{"generated, one character more", valid + "A", SecretGenerated, true},
		{"generated, trailing newline", valid + "\n", SecretGenerated, true},
		{"generated, mistyped random part", flip(valid, len(GeneratedPrefix)+3), SecretGenerated, true},
		{"generated, mistyped checksum", flip(valid, len(valid)-1), SecretGenerated, true},
		{"generated, standard base64 alphabet", GeneratedPrefix + strings.Repeat("+", generatedEncodedLen), SecretGenerated, true},
		{"generated, padded", GeneratedPrefix + body[:len(body)-2] + "==", SecretGenerated, true},
		{"prefix only", GeneratedPrefix, SecretGenerated, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			kind, random, err := ClassifySecret(c.secret)
			if kind != c.kind || (err != nil) != c.bad {
				t.Fatalf("ClassifySecret(%q) = %v, %v; want %v, error %v", c.secret, kind, err, c.kind, c.bad)
			}
			if c.bad && !errors.Is(err, ErrBadGenerated) {
				t.Fatalf("error %v, want ErrBadGenerated", err)
			}
			if kind == SecretGenerated && !c.bad && encodeGenerated(random) != c.secret {
				t.Fatalf("random bytes %x do not encode back to the secret", random)
			}
			if c.bad {
				if _, _, err := StretchSecret(TopicID("t"), c.secret); !errors.Is(err, ErrBadGenerated) {
					t.Fatalf("StretchSecret accepted %q: %v", c.secret, err)
				}
			}
		})
	}
}

func TestGenerateSecret(t *testing.T) {
	seen := map[string]bool{}
	for range 8 {
		s, err := GenerateSecret()
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != len(GeneratedPrefix)+generatedEncodedLen || !strings.HasPrefix(s, GeneratedPrefix) {
			t.Fatalf("generated secret %q has the wrong shape", s)
		}
		kind, _, err := ClassifySecret(s)
		if kind != SecretGenerated || err != nil {
			t.Fatalf("generated secret %q classified %v, %v", s, kind, err)
		}
		if seen[s] {
			t.Fatalf("secret %q generated twice", s)
		}
		seen[s] = true
	}
}

func TestStretchSecret(t *testing.T) {
	a, b := TopicID("team-a"), TopicID("team-b")
	// One Argon2id run per case: they are slow on purpose.
	aS, _, _ := StretchSecret(a, "secret")
	aS2, _, _ := StretchSecret(a, "secret")
	bS, _, _ := StretchSecret(b, "secret")
	aO, _, _ := StretchSecret(a, "secret2")
	if aS != aS2 {
		t.Error("StretchSecret is not deterministic")
	}
	if aS == bS {
		t.Error("one secret on two topics stretches to the same bytes: the salt must bind the topic")
	}
	if aS == aO {
		t.Error("two secrets stretch to the same bytes")
	}
	// A generated secret is used as it is, whatever the topic.
	gA, _, _ := StretchSecret(a, vecGenerated)
	gB, _, _ := StretchSecret(b, vecGenerated)
	if gA != gB || hex.EncodeToString(gA[:]) != vecGeneratedRandom {
		t.Errorf("generated secret stretched to %x and %x, want its random bytes", gA, gB)
	}
}

// BenchmarkStretchSecret measures the Argon2id cost a node pays once at
// start and an attacker pays per guess (docs/protocol.md §3.2).
func BenchmarkStretchSecret(b *testing.B) {
	id := TopicID(vecTopicName)
	for b.Loop() {
		if _, _, err := StretchSecret(id, vecSecret); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzClassifySecret: any string classifies without panicking; whatever is
// accepted as generated encodes back to itself, and nothing without the
// prefix is ever taken for a generated secret.
func FuzzClassifySecret(f *testing.F) {
	for _, s := range []string{"", vecSecret, vecGenerated, GeneratedPrefix, vecGenerated[:20]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kind, random, err := ClassifySecret(s)
		switch {
		case kind == SecretGenerated && err == nil && encodeGenerated(random) != s:
			t.Fatalf("%q accepted as generated but its bytes encode to %q", s, encodeGenerated(random))
		case kind == SecretGenerated && !strings.HasPrefix(s, GeneratedPrefix):
			t.Fatalf("%q taken for a generated secret without the prefix", s)
		case kind != SecretGenerated && err != nil:
			t.Fatalf("%q: %v for a %v secret", s, err, kind)
		}
	})
}
