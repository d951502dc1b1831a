package mesh

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/plures/plurenet/internal/nodekey"
)

// testKey returns a deterministic, well-spread key for index i.
func testKey(i int) nodekey.Public { return nodekey.Public(TopicID(fmt.Sprintf("test key %d", i))) }

func testKeysN(n int) []nodekey.Public {
	ks := make([]nodekey.Public, n)
	for i := range ks {
		ks[i] = testKey(i)
	}
	return ks
}

func TestValidateV4Prefix(t *testing.T) {
	for _, c := range []struct {
		in string
		ok bool
	}{
		{"100.64.0.0/10", true},
		{"10.0.0.0/8", true},
		{"192.168.7.0/24", true},
		{"192.168.7.0/30", true},
		{"10.0.0.0/7", false},
		{"192.168.7.0/31", false},
		{"192.168.7.1/32", false},
		{"100.64.0.1/10", false},
		{"fd00::/48", false},
		{"::ffff:10.0.0.0/104", false},
		{"", false},
	} {
		var p netip.Prefix
		if c.in != "" {
			p = netip.MustParsePrefix(c.in)
		}
		if err := ValidateV4Prefix(p); (err == nil) != c.ok {
			t.Errorf("ValidateV4Prefix(%q) = %v, want ok=%v", c.in, err, c.ok)
		}
	}
}

func TestV6(t *testing.T) {
	ula := ULAPrefix(TopicID("v6"))
	seen := map[netip.Addr]bool{}
	for _, k := range testKeysN(200) {
		a := V6(ula, k)
		if !ula.Contains(a) || a == ula.Addr() {
			t.Fatalf("V6 = %s, want a host in %s", a, ula)
		}
		if seen[a] {
			t.Fatalf("V6 collision at %s", a)
		}
		seen[a] = true
		if V6(ula, k) != a {
			t.Fatal("V6 not deterministic")
		}
	}
	for _, bad := range []string{"fd00::/64", "fd00::/40", "10.0.0.0/8", "::ffff:0:0/96"} {
		if a := V6(netip.MustParsePrefix(bad), testKey(0)); a.IsValid() {
			t.Errorf("V6(%s) = %s, want the zero Addr", bad, a)
		}
	}
	if a := V6(netip.Prefix{}, testKey(0)); a.IsValid() {
		t.Errorf("V6(zero prefix) = %s", a)
	}
}

func TestCandidateV4Bounds(t *testing.T) {
	keys := testKeysN(20)
	for bits := MinV4PrefixBits; bits <= MaxV4PrefixBits; bits++ {
		p := netip.PrefixFrom(netip.MustParseAddr("10.20.30.40"), bits).Masked()
		seen := map[netip.Addr]bool{}
		for _, k := range keys {
			for attempt := range 8 {
				a := CandidateV4(p, k, attempt)
				if !usableV4(p, a) {
					t.Fatalf("%s: CandidateV4 = %s, not a usable host", p, a)
				}
				seen[a] = true
			}
		}
		if bits == MaxV4PrefixBits && len(seen) != 2 {
			t.Fatalf("%s: candidates hit %d addresses, want both usable hosts", p, len(seen))
		}
	}
	for _, c := range []struct {
		name    string
		p       netip.Prefix
		attempt int
	}{
		{"/31", netip.MustParsePrefix("10.0.0.0/31"), 0},
		{"/7", netip.MustParsePrefix("10.0.0.0/7"), 0},
		{"IPv6", netip.MustParsePrefix("fd00::/64"), 0},
		{"zero", netip.Prefix{}, 0},
		{"negative attempt", DefaultV4Prefix, -1},
	} {
		if a := CandidateV4(c.p, testKey(0), c.attempt); a.IsValid() {
			t.Errorf("%s: CandidateV4 = %s, want the zero Addr", c.name, a)
		}
	}
}

func claimsOf(keys []nodekey.Public) []Claim {
	cs := make([]Claim, len(keys))
	for i, k := range keys {
		cs[i] = Claim{Key: k}
	}
	return cs
}

// checkRule verifies the collision rule on a result: addresses distinct and
// usable; pinned claims hold their pin unless a lower key pinned it first;
// every derived member holds its first candidate not taken by a pin or by a
// lower-keyed derived member.
func checkRule(t *testing.T, prefix netip.Prefix, claims []Claim, got map[nodekey.Public]netip.Addr) {
	t.Helper()
	owner := map[netip.Addr]nodekey.Public{}
	for k, a := range got {
		if !usableV4(prefix, a) {
			t.Fatalf("%s got %s, not a usable host of %s", k.ShortString(), a, prefix)
		}
		if o, dup := owner[a]; dup {
			t.Fatalf("%s and %s both got %s", k.ShortString(), o.ShortString(), a)
		}
		owner[a] = k
	}
	sorted := slices.Clone(claims)
	slices.SortFunc(sorted, func(a, b Claim) int { return bytes.Compare(a.Key[:], b.Key[:]) })
	pinHeld := map[nodekey.Public]bool{}
	for _, c := range sorted {
		if c.Pinned.IsValid() && got[c.Key] == c.Pinned {
			pinHeld[c.Key] = true
		}
	}
	for _, c := range sorted {
		if pinHeld[c.Key] {
			continue
		}
		a, ok := got[c.Key]
		if !ok {
			continue // ErrNoFreeAddress, checked by the callers that expect it
		}
		for attempt := 0; ; attempt++ {
			cand := CandidateV4(prefix, c.Key, attempt)
			if cand == a {
				break
			}
			o, taken := owner[cand]
			if !taken || (!pinHeld[o] && bytes.Compare(o[:], c.Key[:]) > 0) {
				t.Fatalf("%s skipped candidate %d (%s) held by %v", c.Key.ShortString(), attempt, cand, o.ShortString())
			}
		}
	}
}

func TestAssignDefaultPrefix(t *testing.T) {
	claims := claimsOf(testKeysN(100))
	got, err := Assign(DefaultV4Prefix, claims)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(claims) {
		t.Fatalf("assigned %d of %d", len(got), len(claims))
	}
	checkRule(t, DefaultV4Prefix, claims, got)
}

func TestAssignForcedCollisions(t *testing.T) {
	p29 := netip.MustParsePrefix("192.168.9.8/29") // 6 usable hosts
	claims := claimsOf(testKeysN(5))
	want, err := Assign(p29, claims)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != len(claims) {
		t.Fatalf("assigned %d of %d", len(want), len(claims))
	}
	checkRule(t, p29, claims, want)
	moved := 0
	for _, c := range claims {
		if want[c.Key] != CandidateV4(p29, c.Key, 0) {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("no collision happened; the test no longer exercises the rule")
	}

	// Every input order gives the same map.
	n := 0
	permute(claims, 0, func(perm []Claim) {
		n++
		got, err := Assign(p29, perm)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("order %d gave %v, want %v", n, got, want)
		}
	})
	if n != 120 {
		t.Fatalf("tried %d orders, want 120", n)
	}
}

func permute(cs []Claim, i int, f func([]Claim)) {
	if i == len(cs) {
		f(slices.Clone(cs))
		return
	}
	for j := i; j < len(cs); j++ {
		cs[i], cs[j] = cs[j], cs[i]
		permute(cs, i+1, f)
		cs[i], cs[j] = cs[j], cs[i]
	}
}

func TestAssignHigherKeyNeverMovesOthers(t *testing.T) {
	p := netip.MustParsePrefix("10.1.2.0/28") // 14 hosts, 8 members: collisions
	keys := testKeysN(8)
	slices.SortFunc(keys, func(a, b nodekey.Public) int { return bytes.Compare(a[:], b[:]) })
	prev := map[nodekey.Public]netip.Addr{}
	for n := 1; n <= len(keys); n++ {
		got, err := Assign(p, claimsOf(keys[:n]))
		if err != nil {
			t.Fatal(err)
		}
		for k, a := range prev {
			if got[k] != a {
				t.Fatalf("adding higher key %s moved %s from %s to %s", keys[n-1].ShortString(), k.ShortString(), a, got[k])
			}
		}
		prev = got
	}
}

func TestAssignFull(t *testing.T) {
	p30 := netip.MustParsePrefix("10.9.9.0/30") // 2 usable hosts
	claims := claimsOf(testKeysN(3))
	got, err := Assign(p30, claims)
	if !errors.Is(err, ErrNoFreeAddress) {
		t.Fatalf("err = %v, want ErrNoFreeAddress", err)
	}
	if len(got) != 2 {
		t.Fatalf("assigned %d, want 2", len(got))
	}
	checkRule(t, p30, claims, got)
	// The member left out is the highest key.
	keys := testKeysN(3)
	slices.SortFunc(keys, func(a, b nodekey.Public) int { return bytes.Compare(a[:], b[:]) })
	if _, ok := got[keys[2]]; ok {
		t.Fatal("the highest key got an address while a lower one did not")
	}
}

func TestAssignPins(t *testing.T) {
	p := netip.MustParsePrefix("10.7.0.0/24")
	keys := testKeysN(4)
	slices.SortFunc(keys, func(a, b nodekey.Public) int { return bytes.Compare(a[:], b[:]) })
	lo, mid, hi, other := keys[0], keys[1], keys[2], keys[3]
	loAddr := CandidateV4(p, lo, 0)
	pin := netip.MustParseAddr("10.7.0.77")

	t.Run("pin beats a lower derived key", func(t *testing.T) {
		claims := []Claim{{Key: lo}, {Key: hi, Pinned: loAddr}}
		got, err := Assign(p, claims)
		if err != nil {
			t.Fatal(err)
		}
		if got[hi] != loAddr || got[lo] == loAddr {
			t.Fatalf("got %v; want %s for the pinned member", got, loAddr)
		}
		checkRule(t, p, claims, got)
	})
	t.Run("two pins: lower key keeps it", func(t *testing.T) {
		claims := []Claim{{Key: hi, Pinned: pin}, {Key: mid, Pinned: pin}, {Key: other}}
		got, err := Assign(p, claims)
		if err == nil {
			t.Fatal("contested pin not reported")
		}
		if got[mid] != pin || got[hi] == pin || !got[hi].IsValid() {
			t.Fatalf("got %v; want %s for the lower key and a derived address for the other", got, pin)
		}
		checkRule(t, p, claims, got)
	})
	for _, bad := range []string{"10.7.0.0", "10.7.0.255", "10.8.0.1", "fd00::1"} {
		t.Run("unusable pin "+bad, func(t *testing.T) {
			claims := []Claim{{Key: mid, Pinned: netip.MustParseAddr(bad)}}
			got, err := Assign(p, claims)
			if err == nil {
				t.Fatal("unusable pin not reported")
			}
			if got[mid] != CandidateV4(p, mid, 0) {
				t.Fatalf("got %s, want the derived address", got[mid])
			}
		})
	}
	t.Run("duplicate claim", func(t *testing.T) {
		a, errA := Assign(p, []Claim{{Key: mid, Pinned: pin}, {Key: mid}})
		b, errB := Assign(p, []Claim{{Key: mid}, {Key: mid, Pinned: pin}})
		if errA == nil || errB == nil {
			t.Fatal("duplicate claim not reported")
		}
		if len(a) != 1 || !maps.Equal(a, b) {
			t.Fatalf("duplicate handling depends on order: %v vs %v", a, b)
		}
	})
	t.Run("invalid prefix", func(t *testing.T) {
		got, err := Assign(netip.MustParsePrefix("10.0.0.0/31"), []Claim{{Key: lo}})
		if err == nil || len(got) != 0 {
			t.Fatalf("got %v, %v; want an error and no addresses", got, err)
		}
	})
}

func BenchmarkAssign1024(b *testing.B) {
	claims := claimsOf(testKeysN(1024))
	for b.Loop() {
		if _, err := Assign(DefaultV4Prefix, claims); err != nil {
			b.Fatal(err)
		}
	}
}
