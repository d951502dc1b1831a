package names

import (
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/plures/plurenet/internal/mesh"
)

func TestDefaultSuffix(t *testing.T) {
	hash := func(topic string) string {
		id := mesh.TopicID(topic)
		return hex.EncodeToString(id[:4])
	}
	for _, tc := range []struct {
		name, topic, want string
	}{
		{"a label is used as is", "home", "home.plurenet"},
		{"hyphenated label", "team-a", "team-a.plurenet"},
		{"upper case gets the hash", "Home", "home--" + hash("Home") + ".plurenet"},
		{"spaces become one hyphen", "my  mesh", "my-mesh--" + hash("my  mesh") + ".plurenet"},
		{"double hyphen is reserved for the hash", "a--b", "a-b--" + hash("a--b") + ".plurenet"},
		{"leading and trailing junk dropped", " !x! ", "x--" + hash(" !x! ") + ".plurenet"},
		{"non-ASCII", "Büro", "b-ro--" + hash("Büro") + ".plurenet"},
		{"nothing usable", "ßß", "mesh--" + hash("ßß") + ".plurenet"},
		{"no name (topic ID only)", "", "mesh--" + hash("") + ".plurenet"},
		{"too long for a label", strings.Repeat("x", 64), strings.Repeat("x", 53) + "--" + hash(strings.Repeat("x", 64)) + ".plurenet"},
		{"cut does not end in a hyphen", strings.Repeat("x", 52) + " yy", strings.Repeat("x", 52) + "--" + hash(strings.Repeat("x", 52)+" yy") + ".plurenet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := DefaultSuffix(tc.topic, mesh.TopicID(tc.topic))
			if got != tc.want {
				t.Fatalf("DefaultSuffix(%q) = %q, want %q", tc.topic, got, tc.want)
			}
			if s, err := ParseSuffix(got); err != nil || s != got {
				t.Fatalf("ParseSuffix(DefaultSuffix(%q)) = %q, %v; the default must be a valid suffix", tc.topic, s, err)
			}
		})
	}
}

// TestDefaultSuffixDistinct checks the claim that distinct topics get
// distinct suffixes, over names chosen to collide if the rule were naive:
// case variants, punctuation variants, names that look like a hashed form.
func TestDefaultSuffixDistinct(t *testing.T) {
	topics := []string{"home", "Home", "HOME", "home ", " home", "home-", "home--", "my mesh", "my-mesh", "my_mesh", "my.mesh", "my--mesh", ""}
	// A topic literally named like another's hashed form.
	h := mesh.TopicID("Home")
	topics = append(topics, "home--"+hex.EncodeToString(h[:4]))
	for i := range 200 {
		topics = append(topics, fmt.Sprintf("Mesh %d", i), fmt.Sprintf("mesh-%d", i))
	}
	seen := make(map[string]string)
	for _, topic := range topics {
		s := DefaultSuffix(topic, mesh.TopicID(topic))
		if other, dup := seen[s]; dup {
			t.Fatalf("topics %q and %q share suffix %q", other, topic, s)
		}
		seen[s] = topic
	}
}

func TestParseSuffix(t *testing.T) {
	for _, tc := range []struct {
		name, in, want, err string
	}{
		{"canonical", "home.plurenet", "home.plurenet", ""},
		{"case and final dot", "Home.PlureNet.", "home.plurenet", ""},
		{"single label", "mesh", "mesh", ""},
		{"deep", "a.b.c.example", "a.b.c.example", ""},
		{"empty", " ", "", "empty"},
		{"empty label", "a..b", "", "label \"\""},
		{"leading hyphen", "-a.b", "", "not a host name label"},
		{"underscore", "my_mesh.x", "", "not a host name label"},
		{"mdns", "home.local", "", "multicast DNS"},
		{"localhost", "x.localhost", "", "reserved"},
		{"arpa", "in-addr.arpa", "", "reserved"},
		{"too long", strings.Repeat("a.", 95) + "com", "", "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSuffix(tc.in)
			if tc.err == "" {
				if err != nil || got != tc.want {
					t.Fatalf("ParseSuffix(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("ParseSuffix(%q) = %q, %v; want an error containing %q", tc.in, got, err, tc.err)
			}
		})
	}
}
