package discovery

import (
	"net/netip"
	"testing"
)

func TestCandidates(t *testing.T) {
	bound := netip.MustParseAddrPort("192.0.2.7:51898")
	if got := Candidates(bound); len(got) != 1 || got[0] != "udp4 192.0.2.7:51898 host" {
		t.Fatalf("Candidates(%s) = %q", bound, got)
	}
	bound6 := netip.MustParseAddrPort("[2001:db8::7]:51898")
	if got := Candidates(bound6); len(got) != 1 || got[0] != "udp6 [2001:db8::7]:51898 host" {
		t.Fatalf("Candidates(%s) = %q", bound6, got)
	}
	// Bound to every IPv4 address: one per interface address, each parsing
	// back to an IPv4 address that is not loopback, with the port.
	for _, c := range Candidates(netip.MustParseAddrPort("0.0.0.0:4000")) {
		ap, ok := ParseCandidate(c)
		if !ok || ap.Port() != 4000 || !ap.Addr().Is4() || ap.Addr().IsLoopback() {
			t.Fatalf("candidate %q: %s, %v", c, ap, ok)
		}
	}
	// Dual-stack: IPv6 too, never loopback or link-local, IPv4 first.
	seen6 := false
	for _, c := range Candidates(netip.MustParseAddrPort("[::]:4000")) {
		ap, ok := ParseCandidate(c)
		if !ok || ap.Port() != 4000 || ap.Addr().IsLoopback() || ap.Addr().IsLinkLocalUnicast() {
			t.Fatalf("candidate %q: %s, %v", c, ap, ok)
		}
		if ap.Addr().Is4() && seen6 {
			t.Fatalf("IPv4 candidate %q after an IPv6 one", c)
		}
		seen6 = seen6 || ap.Addr().Is6()
	}
}

func TestParseCandidate(t *testing.T) {
	tests := []struct {
		in   string
		want netip.AddrPort
		ok   bool
	}{
		{"udp4 192.0.2.10:41641 host", netip.MustParseAddrPort("192.0.2.10:41641"), true},
		{"udp4 0.0.0.0:1", netip.MustParseAddrPort("0.0.0.0:1"), true},
		{"udp4 192.0.2.10:0 host", netip.AddrPort{}, false},
		{"udp6 [2001:db8::10]:41641 host", netip.MustParseAddrPort("[2001:db8::10]:41641"), true},
		{"udp4 [2001:db8::10]:41641 host", netip.AddrPort{}, false},
		{"udp6 192.0.2.10:41641 host", netip.AddrPort{}, false},
		{"udp6 [::ffff:192.0.2.10]:41641 host", netip.AddrPort{}, false},
		{"udp6 [fe80::1%eth0]:41641 host", netip.AddrPort{}, false},
		{"udp6 [2001:db8::10]:0 host", netip.AddrPort{}, false},
		{"candidate:1 1 udp 2130706431 10.0.0.5 5000 typ host", netip.AddrPort{}, false},
		{"udp4", netip.AddrPort{}, false},
		{"", netip.AddrPort{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseCandidate(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseCandidate(%q) = %s, %v; want %s, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// FuzzParseCandidate feeds arbitrary announced candidates (network input,
// authenticated but from any member) to the parser: what it accepts is an
// IPv4 or IPv6 address (no zone, not IPv4-mapped) with a port, and formats back to a candidate it reads the
// same.
func FuzzParseCandidate(f *testing.F) {
	f.Add("udp4 192.0.2.10:41641 host")
	f.Add("udp6 [2001:db8::10]:41641 host")
	f.Add("udp4 0.0.0.0:1")
	f.Fuzz(func(t *testing.T, s string) {
		ap, ok := ParseCandidate(s)
		if !ok {
			return
		}
		if ap.Port() == 0 || ap.Addr().Zone() != "" || ap.Addr().Is4In6() || !ap.Addr().IsValid() {
			t.Fatalf("ParseCandidate(%q) = %s", s, ap)
		}
		if again, ok := ParseCandidate(FormatCandidate(ap)); !ok || again != ap {
			t.Fatalf("FormatCandidate(%s) = %q reads back as %s, %v", ap, FormatCandidate(ap), again, ok)
		}
	})
}
