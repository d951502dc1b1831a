package names

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestReverseZones(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		n      int
		first  string
		last   string
	}{
		{"100.64.0.0/10", 64, "64.100.in-addr.arpa", "127.100.in-addr.arpa"},
		{"10.0.0.0/8", 1, "10.in-addr.arpa", "10.in-addr.arpa"},
		{"172.16.0.0/12", 16, "16.172.in-addr.arpa", "31.172.in-addr.arpa"},
		{"192.168.4.0/22", 4, "4.168.192.in-addr.arpa", "7.168.192.in-addr.arpa"},
		{"192.168.4.4/30", 4, "4.4.168.192.in-addr.arpa", "7.4.168.192.in-addr.arpa"},
		{"fd12:3456:789a::/48", 1, "a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa", "a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa"},
		{"fd12:3456:7898::/46", 4, "8.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa", "b.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa"},
		{"fd00::/9", 8, "0.d.f.ip6.arpa", "7.d.f.ip6.arpa"},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			p := netip.MustParsePrefix(tc.prefix)
			z := ReverseZones(p)
			if len(z) != tc.n || z[0] != tc.first || z[len(z)-1] != tc.last {
				t.Fatalf("ReverseZones(%s) = %d zones %q..%q; want %d %q..%q", p, len(z), z[0], z[len(z)-1], tc.n, tc.first, tc.last)
			}
			// Every zone lies inside the prefix, and the zones are distinct.
			for _, name := range z {
				zp, exact, ok := ParseReverse(name)
				if !ok || !exact || zp.Bits() < p.Bits() || !p.Contains(zp.Addr()) {
					t.Fatalf("zone %q parses to %v (exact %v, ok %v), not inside %s", name, zp, exact, ok, p)
				}
			}
			if len(slices.Compact(slices.Sorted(slices.Values(z)))) != len(z) {
				t.Fatalf("ReverseZones(%s) repeats a zone: %q", p, z)
			}
		})
	}
	if z := ReverseZones(netip.Prefix{}); z != nil {
		t.Fatalf("ReverseZones(invalid) = %q, want none", z)
	}
}

// TestReverseZonesCover checks that each address of a prefix has its
// reverse name under exactly one zone of ReverseZones, and addresses just
// outside under none.
func TestReverseZonesCover(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, ps := range []string{"100.64.0.0/10", "192.168.4.0/22", "192.168.4.4/30", "fd12:3456:789a::/48", "fd12:3456:7898::/46"} {
		p := netip.MustParsePrefix(ps)
		zones := ReverseZones(p)
		for range 500 {
			a := randomIn(rng, p)
			name := reverseName(a, a.BitLen()/map[bool]int{true: 8, false: 4}[a.Is4()])
			n := 0
			for _, z := range zones {
				if strings.HasSuffix(name, "."+z) || name == z {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("%s (%s in %s) falls under %d zones of %q", name, a, p, n, zones)
			}
		}
		outside := p.Addr().Prev()
		name := reverseName(outside, outside.BitLen()/map[bool]int{true: 8, false: 4}[outside.Is4()])
		for _, z := range zones {
			if strings.HasSuffix(name, "."+z) {
				t.Fatalf("%s (outside %s) falls under zone %s", name, p, z)
			}
		}
	}
}

func randomIn(rng *rand.Rand, p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		r := byte(rng.Uint32())
		bits := p.Bits() - 8*i // prefix bits in this byte
		switch {
		case bits >= 8:
		case bits <= 0:
			b[i] = r
		default:
			mask := byte(0xff) >> bits
			b[i] = b[i]&^mask | r&mask
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func TestParseReverse(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     string
		prefix string // "" when ok is false
		exact  bool
	}{
		{"v4 address", "4.3.2.100.in-addr.arpa.", "100.2.3.4/32", true},
		{"case and no final dot", "4.3.2.100.IN-ADDR.Arpa", "100.2.3.4/32", true},
		{"v4 partial", "64.100.in-addr.arpa", "100.64.0.0/16", true},
		{"v4 apex", "in-addr.arpa.", "0.0.0.0/0", true},
		{"v4 fifth label", "5.4.3.2.100.in-addr.arpa", "100.2.3.4/32", false},
		{"v4 junk label", "x.64.100.in-addr.arpa", "100.64.0.0/16", false},
		{"v4 leading zero", "04.3.2.100.in-addr.arpa", "100.2.3.0/24", false},
		{"v4 over 255", "256.3.2.100.in-addr.arpa", "100.2.3.0/24", false},
		{"v6 address", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa.", "fd12:3456:789a::1/128", true},
		{"v6 partial", "a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa", "fd12:3456:789a::/48", true},
		{"v6 upper hex", "A.9.8.7.6.5.4.3.2.1.D.F.ip6.arpa", "fd12:3456:789a::/48", true},
		{"v6 two-digit label", "0a.9.8.7.6.5.4.3.2.1.d.f.ip6.arpa", "fd12:3456:7890::/44", false},
		{"not reverse", "laptop.home.plurenet", "", false},
		{"lookalike", "4.3.2.100.xin-addr.arpa", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, exact, ok := ParseReverse(tc.in)
			if tc.prefix == "" {
				if ok {
					t.Fatalf("ParseReverse(%q) = %v, %v, true; want not a reverse name", tc.in, p, exact)
				}
				return
			}
			want := netip.MustParsePrefix(tc.prefix)
			if !ok || p != want || exact != tc.exact {
				t.Fatalf("ParseReverse(%q) = %v, %v, %v; want %v, %v, true", tc.in, p, exact, ok, want, tc.exact)
			}
		})
	}
}
