package srclimit

import (
	"net/netip"
	"testing"
	"time"
)

func testLimiter() *Limiter {
	return New(Config{
		KnownRate: 1, KnownBurst: 4,
		Rate: 1, Burst: 2,
		TotalRate: 1, TotalBurst: 10,
		MaxSources: 8,
		VouchFor:   time.Minute,
	})
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// count returns how many of n datagrams from src pass at now.
func count(l *Limiter, src netip.AddrPort, known bool, n int, now time.Time) int {
	got := 0
	for range n {
		if l.Allow(src, known, now) {
			got++
		}
	}
	return got
}

// TestFloodSparesKnown: unknown sources, many of them, exhaust the shared
// budget; a known source keeps its own.
func TestFloodSparesKnown(t *testing.T) {
	l := testLimiter()
	now := time.Unix(1000, 0)
	passed := 0
	for i := range 200 {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i / 250), byte(i%250 + 1)}), 9)
		passed += count(l, src, false, 5, now)
	}
	if passed != 10 {
		t.Fatalf("%d datagrams from unknown sources passed, want the total burst 10", passed)
	}
	if got := count(l, ap("192.0.2.1:51898"), true, 10, now); got != 4 {
		t.Fatalf("known source: %d passed, want its burst 4", got)
	}
	if k, u := l.Sources(); k != 1 || u > 8 {
		t.Fatalf("tables hold %d known, %d unknown; want 1 and at most 8", k, u)
	}
}

// TestPerSource: one busy unknown source spends its own bucket, not the
// total; other ports of the same IP share it.
func TestPerSource(t *testing.T) {
	l := testLimiter()
	now := time.Unix(1000, 0)
	if got := count(l, ap("10.0.0.1:1"), false, 10, now) + count(l, ap("10.0.0.1:2"), false, 10, now); got != 2 {
		t.Fatalf("one IP on two ports: %d passed, want its burst 2", got)
	}
	if got := count(l, ap("10.0.0.2:1"), false, 10, now); got != 2 {
		t.Fatalf("a second IP: %d passed, want 2", got)
	}
	// Refill: one token a second.
	if got := count(l, ap("10.0.0.1:1"), false, 10, now.Add(time.Second)); got != 1 {
		t.Fatalf("after a second: %d passed, want 1", got)
	}
}

// TestPerSourceIPv6: an unknown IPv6 source is counted by its /64, so the
// addresses of one host's prefix share one bucket; another /64 has its own.
func TestPerSourceIPv6(t *testing.T) {
	l := testLimiter()
	now := time.Unix(1000, 0)
	if got := count(l, ap("[2001:db8:1:2::1]:1"), false, 10, now) + count(l, ap("[2001:db8:1:2:ffff::9]:1"), false, 10, now); got != 2 {
		t.Fatalf("two addresses of one /64: %d passed, want its burst 2", got)
	}
	if got := count(l, ap("[2001:db8:1:3::1]:1"), false, 10, now); got != 2 {
		t.Fatalf("another /64: %d passed, want 2", got)
	}
}

// TestVouch: a vouched source is known until VouchFor passes.
func TestVouch(t *testing.T) {
	l := testLimiter()
	now := time.Unix(1000, 0)
	src := ap("10.0.0.7:5353")
	l.Vouch(src, now)
	if got := count(l, src, false, 10, now); got != 4 {
		t.Fatalf("vouched source: %d passed, want the known burst 4", got)
	}
	later := now.Add(2 * time.Minute)
	if got := count(l, src, false, 10, later); got != 2 {
		t.Fatalf("vouching lapsed: %d passed, want the unknown burst 2", got)
	}
}

// TestBounded: the tables never grow past MaxSources, and full idle
// entries are swept.
func TestBounded(t *testing.T) {
	l := testLimiter()
	now := time.Unix(1000, 0)
	for i := range 100 {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, 0, byte(i + 1)}), 1)
		l.Allow(src, false, now)
		l.Allow(src, true, now)
		l.Vouch(src, now)
	}
	if k, u := l.Sources(); k > 8 || u > 8 {
		t.Fatalf("tables hold %d known, %d unknown; bound 8", k, u)
	}
	later := now.Add(time.Hour)
	l.Allow(ap("10.2.0.1:1"), false, later)
	l.Allow(ap("10.2.0.1:1"), true, later)
	if k, u := l.Sources(); k != 1 || u != 1 {
		t.Fatalf("after a sweep the tables hold %d known, %d unknown; want 1 and 1", k, u)
	}
}
