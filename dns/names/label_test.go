package names

import (
	"strings"
	"testing"

	"github.com/plures/plurenet/internal/nodekey"
)

func TestLabel(t *testing.T) {
	long := strings.Repeat("a", 63)
	for _, tc := range []struct {
		name, in, want string
		ok             bool
	}{
		{"plain", "laptop", "laptop", true},
		{"upper case is lowered", "NAS", "nas", true},
		{"underscore becomes hyphen", "build_box", "build-box", true},
		{"host name keeps its first label", "nas.example.lan", "nas", true},
		{"leading and trailing hyphens dropped", "-db-", "db", true},
		{"underscore at the edge dropped too", "_x_", "x", true},
		{"digits only", "1234", "1234", true},
		{"63 bytes", long, long, true},
		{"empty", "", "", false},
		{"leading dot leaves nothing", ".hidden", "", false},
		{"hyphens only", "--", "", false},
		{"space", "my laptop", "", false},
		{"non-ASCII", "büro", "", false},
		{"64 bytes", long + "b", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Label(tc.in)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("Label(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
			}
			if ok && !isHostLabel(got) {
				t.Fatalf("Label(%q) = %q is not a host label", tc.in, got)
			}
		})
	}
}

func TestKeyLabel(t *testing.T) {
	key := nodekey.Public{0x1a, 0x2b, 0x3c, 0x4d, 0xff}
	for _, tc := range []struct {
		name, in, want string
		ok             bool
	}{
		{"plain", "nas", "nas-1a2b3c4d", true},
		{"normalised first", "NAS.lan", "nas-1a2b3c4d", true},
		{"cut to fit 63", strings.Repeat("a", 60), strings.Repeat("a", 54) + "-1a2b3c4d", true},
		{"cut never leaves a hyphen before the key", strings.Repeat("a", 53) + "-bbbb", strings.Repeat("a", 53) + "-1a2b3c4d", true},
		{"no label, no key label", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := KeyLabel(tc.in, key)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("KeyLabel(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
			}
			if ok && (!isHostLabel(got) || len(got) > MaxLabel) {
				t.Fatalf("KeyLabel(%q) = %q is not a host label", tc.in, got)
			}
		})
	}
}

func TestIsHostName(t *testing.T) {
	for s, want := range map[string]bool{
		"laptop.home.plurenet": true,
		"a-b.c":                true,
		"x":                    true,
		"":                     false,
		"a..b":                 false,
		"a.":                   false,
		"-a.b":                 false,
		"a b":                  false,
		"a\n1.2.3.4 evil":      false,
		"A.b":                  false,
	} {
		if got := IsHostName(s); got != want {
			t.Errorf("IsHostName(%q) = %v, want %v", s, got, want)
		}
	}
}
