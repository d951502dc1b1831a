package names

import (
	"encoding/hex"
	"strings"

	"github.com/plures/plurenet/internal/nodekey"
)

// MaxLabel is the longest DNS label (RFC 1035 section 2.3.4).
const MaxLabel = 63

// keyLabelHex is how many hex digits of a member's key its KeyLabel
// carries: 32 bits make an accidental clash between two members of one name
// a one-in-four-billion event, and keep the label short enough to type.
const keyLabelHex = 8

// Label returns the DNS label a member name answers to, or false when the
// name gives none. The rule:
//
//  1. Only the part before the first '.' counts: the default member name is
//     the host name, and a host named "nas.example.lan" is "nas" to its
//     users, as `hostname -s` says.
//  2. ASCII letters are lowered: DNS compares names without case (RFC 4343),
//     so "NAS" and "nas" are one label (and two members so named collide).
//  3. '_' becomes '-': host names may not hold '_' (RFC 952, RFC 1123).
//  4. Leading and trailing '-' are dropped (a label may not start or end
//     with one).
//  5. Any other byte outside [a-z0-9-], an empty result or one longer than
//     MaxLabel gives no label. Announced names cannot hold such bytes
//     (mesh.ValidName); a name from elsewhere is not guessed at.
func Label(name string) (string, bool) {
	name, _, _ = strings.Cut(name, ".")
	b := make([]byte, 0, len(name))
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case c == '_':
			c = '-'
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-':
		default:
			return "", false
		}
		b = append(b, c)
	}
	l := strings.Trim(string(b), "-")
	if l == "" || len(l) > MaxLabel {
		return "", false
	}
	return l, true
}

// KeyLabel returns the label a member answers to whatever other members
// are called: its Label, cut so the whole fits in MaxLabel, then "-" and the
// first 8 hex digits of its key ("nas-1a2b3c4d"). A member whose name gives
// no label gets none.
func KeyLabel(name string, key nodekey.Public) (string, bool) {
	l, ok := Label(name)
	if !ok {
		return "", false
	}
	if max := MaxLabel - 1 - keyLabelHex; len(l) > max {
		l = strings.TrimRight(l[:max], "-")
	}
	return l + "-" + hex.EncodeToString(key[:keyLabelHex/2]), true
}

// isHostLabel reports whether s is a DNS host label in canonical (lower)
// case: 1 to 63 of [a-z0-9-], not starting or ending with '-'.
func isHostLabel(s string) bool {
	if s == "" || len(s) > MaxLabel || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// IsHostName reports whether s is a lower-case DNS name of host labels
// (without the final dot), as every name a Table gives is. Writers of
// names into files (the hosts file) check it again, so that no bug can
// put a newline or a space where a name belongs.
func IsHostName(s string) bool {
	if s == "" {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !isHostLabel(l) {
			return false
		}
	}
	return true
}
