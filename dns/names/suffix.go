package names

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// Parent is the label every default suffix ends in. It is not a delegated
// top-level domain, so a query that escapes to the host's ordinary resolvers
// ends at the root with NXDOMAIN rather than at someone else's server.
const Parent = "plurenet"

// topicHashHex is how many hex digits of the topic ID a suffix carries
// when the topic name alone cannot be its label (see DefaultSuffix).
const topicHashHex = 8

// MaxSuffix bounds a suffix so that every member name under it, a full
// 63-byte label and its dot included, stays within the 253 characters of a
// DNS name in text form (RFC 1035 section 2.3.4, less the final dot and
// length bytes).
const MaxSuffix = 253 - MaxLabel - 1

// DefaultSuffix returns the suffix of a mesh's names, "LABEL.plurenet", so
// that two meshes on one host never share one (systemd-resolved routes by
// suffix, and hosts-file blocks are keyed by it):
//
//   - When the topic name is already a lower-case host label with no "--"
//     ("home", "team-a"), LABEL is the name itself: the suffix a user
//     guesses.
//   - Otherwise ("Home", "my mesh", "Büro", a name longer than a label, or
//     no name because the mesh was given by topic ID), LABEL is the name
//     lowered with every run of other bytes made one '-' (cut to leave
//     room), then "--" and the first 8 hex digits of the topic ID:
//     "my-mesh--1a2b3c4d". With no usable name it is "mesh--1a2b3c4d".
//
// The two forms cannot meet: only the second holds "--". Two first forms
// differ because the names do; two second forms are equal only if 32 bits
// of the topic IDs are, which distinct names hit by accident once in four
// billion pairs. Topic names differing only in case ("Home", "home") are
// distinct topics with distinct IDs, which is why anything but an exact
// label gets the hash.
func DefaultSuffix(topic string, topicID [32]byte) string {
	if isHostLabel(topic) && !strings.Contains(topic, "--") {
		return topic + "." + Parent
	}
	var b strings.Builder
	dash := false
	// Past MaxLabel bytes the rest is cut anyway; stopping early bounds the
	// work for an absurdly long topic name.
	for i := 0; i < len(topic) && b.Len() <= MaxLabel; i++ {
		c := topic[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'a' <= c && c <= 'z' || '0' <= c && c <= '9' {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteByte(c)
			continue
		}
		dash = true
	}
	base := b.String()
	if max := MaxLabel - 2 - topicHashHex; len(base) > max {
		base = strings.TrimRight(base[:max], "-")
	}
	if base == "" {
		base = "mesh"
	}
	return base + "--" + hex.EncodeToString(topicID[:topicHashHex/2]) + "." + Parent
}

// ParseSuffix checks a suffix given by the user (--dns-suffix) and returns
// it in canonical form: lower case, no leading or trailing dot. Each label
// must be a host label ([a-z0-9-], not starting or ending with '-'); the
// whole at most MaxSuffix characters. Suffixes inside names with a meaning
// of their own are refused: "local" belongs to multicast DNS (RFC 6762) and
// would take those names from Avahi and resolved, "localhost" and "invalid"
// are special-use (RFC 6761), and "arpa" holds the reverse zones, which the
// resolver answers by address instead.
func ParseSuffix(s string) (string, error) {
	in := s
	s = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
	if s == "" {
		return "", fmt.Errorf("dns suffix %q: empty; give a domain such as home.%s", in, Parent)
	}
	if len(s) > MaxSuffix {
		return "", fmt.Errorf("dns suffix %q: %d characters, at most %d leave room for member names", in, len(s), MaxSuffix)
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if !isHostLabel(l) {
			return "", fmt.Errorf("dns suffix %q: label %q is not a host name label (letters, digits and '-', not first or last, 1 to %d characters)", in, l, MaxLabel)
		}
	}
	switch top := labels[len(labels)-1]; top {
	case "local":
		return "", fmt.Errorf("dns suffix %q: names under .local belong to multicast DNS (RFC 6762); pick another, e.g. home.%s", in, Parent)
	case "localhost", "invalid", "arpa":
		return "", fmt.Errorf("dns suffix %q: .%s is reserved (RFC 6761, RFC 3172); pick another, e.g. home.%s", in, top, Parent)
	}
	return s, nil
}
