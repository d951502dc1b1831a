package mesh

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"

	"github.com/plures/plurenet/internal/nodekey"
)

// DefaultV4Prefix is the mesh IPv4 prefix unless configured otherwise: the
// RFC 6598 shared address space, which home and corporate LANs rarely use
// and which gives 22 host bits, so derived addresses seldom collide.
var DefaultV4Prefix = netip.MustParsePrefix("100.64.0.0/10")

// IPv4 prefix length bounds. Shorter than /8 would let a mesh claim a large
// share of the IPv4 space; /31 and /32 have no host addresses once the
// network and broadcast addresses are excluded.
const (
	MinV4PrefixBits = 8
	MaxV4PrefixBits = 30
)

// MaxV4Attempts bounds how many candidates Assign tries for one member.
// With n members in h usable addresses a member fails only if 64 successive
// hashes all land on taken addresses, probability (n/h)^64: nil in practice
// for the default prefix, and a clear error instead of a long loop when a
// tiny prefix is full.
const MaxV4Attempts = 64

// ErrNoFreeAddress is reported by Assign for a member that found no free
// IPv4 address within MaxV4Attempts candidates.
var ErrNoFreeAddress = errors.New("no free IPv4 address in the mesh prefix")

// ValidateV4Prefix reports whether p can be a mesh IPv4 prefix: IPv4, /8 to
// /30, with no host bits set.
func ValidateV4Prefix(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return errors.New("mesh IPv4 prefix: not set or invalid")
	case !p.Addr().Is4():
		return fmt.Errorf("mesh IPv4 prefix %s: not an IPv4 prefix", p)
	case p.Bits() < MinV4PrefixBits || p.Bits() > MaxV4PrefixBits:
		return fmt.Errorf("mesh IPv4 prefix %s: length must be /%d to /%d", p, MinV4PrefixBits, MaxV4PrefixBits)
	case p.Masked() != p:
		return fmt.Errorf("mesh IPv4 prefix %s: host bits set (did you mean %s?)", p, p.Masked())
	}
	return nil
}

// V6 returns the node's IPv6 address: the mesh's /48 followed by 80 bits of
// BLAKE2b-256(labelV6Host || key). 80 bits make a collision among even a
// million members about a 2^-41 event, so IPv6 needs no collision rule and
// never changes for a given key and topic. An all-zero host part (the
// subnet-router anycast address of RFC 4291 section 2.6.1) is replaced by
// ...:1; its probability is 2^-80. V6 returns the zero Addr when ula is not
// an IPv6 /48.
func V6(ula netip.Prefix, key nodekey.Public) netip.Addr {
	if !ula.IsValid() || !ula.Addr().Is6() || ula.Addr().Is4In6() || ula.Bits() != 48 {
		return netip.Addr{}
	}
	a := ula.Masked().Addr().As16()
	h := labeledHash(labelV6Host, key[:])
	copy(a[6:], h[:10])
	if allZero(a[6:]) {
		a[15] = 1
	}
	return netip.AddrFrom16(a)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// CandidateV4 returns the node's attempt-th IPv4 candidate in prefix: the
// network address plus 1 + (H mod (2^hostbits - 2)), where H is the first 8
// bytes, big endian, of BLAKE2b-256(labelV4Host || key || attempt as 4 bytes
// big endian). The offset is never 0 (network address) nor all ones
// (broadcast). The modulo bias is below 2^-40 for every allowed prefix.
// CandidateV4 returns the zero Addr when prefix fails ValidateV4Prefix or
// attempt is negative.
func CandidateV4(prefix netip.Prefix, key nodekey.Public, attempt int) netip.Addr {
	if ValidateV4Prefix(prefix) != nil || attempt < 0 || uint64(attempt) > math.MaxUint32 {
		return netip.Addr{}
	}
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(attempt))
	h := labeledHash(labelV4Host, key[:], n[:])
	hostBits := 32 - prefix.Bits()
	usable := uint64(1)<<hostBits - 2
	off := 1 + binary.BigEndian.Uint64(h[:8])%usable
	base := prefix.Addr().As4()
	v := binary.BigEndian.Uint32(base[:]) | uint32(off)
	var out [4]byte
	binary.BigEndian.PutUint32(out[:], v)
	return netip.AddrFrom4(out)
}

// usableV4 reports whether a is a host address of prefix other than its
// network and broadcast addresses.
func usableV4(prefix netip.Prefix, a netip.Addr) bool {
	if !a.Is4() || !prefix.Contains(a) {
		return false
	}
	b := a.As4()
	host := binary.BigEndian.Uint32(b[:]) & (1<<(32-prefix.Bits()) - 1)
	return host != 0 && host != 1<<(32-prefix.Bits())-1
}

// Claim is what one member asks of the IPv4 assignment: its key and, if the
// member pinned one with --ip, the address it wants (zero if not pinned).
type Claim struct {
	Key    nodekey.Public
	Pinned netip.Addr
}

// Assign computes every member's IPv4 address by the deterministic collision
// rule, which every member evaluates on its own view of the membership and
// so reaches the same map without coordination:
//
//  1. Pinned claims, in ascending key order (bytes.Compare), take their
//     pinned address. If a lower key already took it, or the pin is not a
//     usable host address of prefix, the member falls back to rule 2.
//  2. The remaining members, in ascending key order, take their first
//     candidate (CandidateV4 attempt 0, 1, 2, ...) not already taken, trying
//     at most MaxV4Attempts.
//
// Consequence: a member's IPv4 changes only when a member with a lower key
// that derives the same address joins (or one that pins it), and changes
// back when that member leaves. With the default 22 host bits that is rare;
// IPv6 (V6) never changes.
//
// The map holds every member that got an address. The error, if not nil,
// joins one error per claim that could not be honoured as asked: an invalid
// prefix (empty map), a duplicate key (the claim sorting first by pin is
// used), an unusable or contested pin (the member got a derived address) or
// ErrNoFreeAddress (the member is absent from the map).
func Assign(prefix netip.Prefix, claims []Claim) (map[nodekey.Public]netip.Addr, error) {
	if err := ValidateV4Prefix(prefix); err != nil {
		return map[nodekey.Public]netip.Addr{}, err
	}
	sorted := slices.Clone(claims)
	slices.SortFunc(sorted, func(a, b Claim) int {
		if c := bytes.Compare(a.Key[:], b.Key[:]); c != 0 {
			return c
		}
		return a.Pinned.Compare(b.Pinned)
	})
	var errs []error
	uniq := sorted[:0]
	for i, c := range sorted {
		if i > 0 && c.Key == sorted[i-1].Key {
			errs = append(errs, fmt.Errorf("member %s: duplicate claim ignored", c.Key.ShortString()))
			continue
		}
		uniq = append(uniq, c)
	}

	taken := make(map[netip.Addr]nodekey.Public, len(uniq))
	byKey := make(map[nodekey.Public]netip.Addr, len(uniq))
	var derived []nodekey.Public
	for _, c := range uniq {
		if !c.Pinned.IsValid() {
			derived = append(derived, c.Key)
			continue
		}
		switch owner, ok := taken[c.Pinned]; {
		case !usableV4(prefix, c.Pinned):
			errs = append(errs, fmt.Errorf("member %s: pinned %s is not a host address of %s; using a derived address", c.Key.ShortString(), c.Pinned, prefix))
		case ok:
			errs = append(errs, fmt.Errorf("member %s: pinned %s is held by lower key %s; using a derived address", c.Key.ShortString(), c.Pinned, owner.ShortString()))
		default:
			taken[c.Pinned] = c.Key
			byKey[c.Key] = c.Pinned
			continue
		}
		derived = append(derived, c.Key)
	}
	// Fallen-back pins were appended out of key order.
	slices.SortFunc(derived, func(a, b nodekey.Public) int { return bytes.Compare(a[:], b[:]) })
	for _, k := range derived {
		got := false
		for attempt := range MaxV4Attempts {
			a := CandidateV4(prefix, k, attempt)
			if _, ok := taken[a]; ok {
				continue
			}
			taken[a] = k
			byKey[k] = a
			got = true
			break
		}
		if !got {
			errs = append(errs, fmt.Errorf("member %s: %w %s after %d attempts", k.ShortString(), ErrNoFreeAddress, prefix, MaxV4Attempts))
		}
	}
	return byKey, errors.Join(errs...)
}
