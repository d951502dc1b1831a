package relayserver

import (
	"net/http"
	"net/netip"
	"testing"
	"time"
)

func TestSourceAddress(t *testing.T) {
	for _, c := range []struct {
		name   string
		remote string
		xff    []string
		trust  bool
		want   string
		ok     bool
	}{
		{"IPv4 peer", "192.0.2.1:5000", nil, false, "192.0.2.1/32", true},
		{"IPv6 peer counts by /64", "[2001:db8:1:2:3:4:5:6]:5000", nil, false, "2001:db8:1:2::/64", true},
		{"mapped IPv4", "[::ffff:192.0.2.1]:5000", nil, false, "192.0.2.1/32", true},
		{"zone dropped", "[fe80::1%eth0]:5000", nil, false, "fe80::/64", true},
		{"header ignored when untrusted", "192.0.2.1:5000", []string{"198.51.100.1"}, false, "192.0.2.1/32", true},
		{"last entry when trusted", "10.0.0.1:5000", []string{"198.51.100.1, 203.0.113.9"}, true, "203.0.113.9/32", true},
		{"last header when trusted", "10.0.0.1:5000", []string{"198.51.100.1", "203.0.113.9 "}, true, "203.0.113.9/32", true},
		{"garbage header falls back to peer", "10.0.0.1:5000", []string{"not an address"}, true, "10.0.0.1/32", true},
		{"no address at all", "pipe", nil, false, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := newSourceLimits(Config{TrustProxyHeaders: c.trust})
			r := &http.Request{RemoteAddr: c.remote, Header: http.Header{}}
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			got, ok := l.source(r)
			if ok != c.ok || (ok && got.String() != c.want) {
				t.Fatalf("source = %v, %v; want %s, %v", got, ok, c.want, c.ok)
			}
		})
	}
}

// The handshake-rate table stays bounded however many addresses knock.
func TestHandshakeTableBounded(t *testing.T) {
	l := newSourceLimits(Config{HandshakeRatePerIP: 1, HandshakeBurstPerIP: 2})
	now := time.Unix(1000, 0)
	for i := range maxRateEntries + 1000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		p := sourceOf(a)
		l.allowHandshake(p, now)
		l.allowHandshake(p, now) // drain the bucket: not idle, not swept
	}
	if _, n := l.counts(); n > maxRateEntries {
		t.Fatalf("%d buckets, cap %d", n, maxRateEntries)
	}
	// Once buckets have refilled they are swept when room is needed.
	later := now.Add(time.Hour)
	p := sourceOf(netip.MustParseAddr("192.0.2.1"))
	if !l.allowHandshake(p, later) {
		t.Fatal("a new address was refused")
	}
	if _, n := l.counts(); n != 1 {
		t.Fatalf("%d buckets after a sweep of idle ones, want 1", n)
	}
}

// Prefix limits left at zero follow the per-address ones, Unlimited
// included: a factor times Unlimited is not a limit (and not Unlimited).
func TestPrefixLimitsFollowPerAddress(t *testing.T) {
	for _, c := range []struct {
		name             string
		in               Config
		conns56, conns48 int
		rate56, rate48   float64
	}{
		{"defaults", Config{}, DefaultNet56Factor * DefaultMaxConnsPerIP, DefaultNet48Factor * DefaultMaxConnsPerIP,
			DefaultNet56Factor * DefaultHandshakeRatePerIP, DefaultNet48Factor * DefaultHandshakeRatePerIP},
		{"scaled", Config{MaxConnsPerIP: 10, HandshakeRatePerIP: 1}, 10 * DefaultNet56Factor, 10 * DefaultNet48Factor, DefaultNet56Factor, DefaultNet48Factor},
		{"unlimited", Config{MaxConnsPerIP: Unlimited, HandshakeRatePerIP: Unlimited}, Unlimited, Unlimited, Unlimited, Unlimited},
		{"own values", Config{MaxConnsPerIP: Unlimited, MaxConnsPer56: 7, MaxConnsPer48: Unlimited}, 7, Unlimited,
			DefaultNet56Factor * DefaultHandshakeRatePerIP, DefaultNet48Factor * DefaultHandshakeRatePerIP},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := c.in.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MaxConnsPer56 != c.conns56 || cfg.MaxConnsPer48 != c.conns48 || cfg.HandshakeRatePer56 != c.rate56 || cfg.HandshakeRatePer48 != c.rate48 {
				t.Fatalf("conns %d %d, rates %v %v; want %d %d, %v %v", cfg.MaxConnsPer56, cfg.MaxConnsPer48, cfg.HandshakeRatePer56, cfg.HandshakeRatePer48,
					c.conns56, c.conns48, c.rate56, c.rate48)
			}
		})
	}
}

// An IPv6 client holds a whole delegation: its /56 and /48 are limited
// besides its /64, so hopping between /64s does not multiply its share.
// Before the /56 and /48 levels, every /64 below counted on its own and all
// of these were admitted.
func TestIPv6PrefixConnLimits(t *testing.T) {
	cfg, err := Config{MaxConnsPerIP: 1, MaxConnsPer56: 2, MaxConnsPer48: 3}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	l := newSourceLimits(cfg)
	src := func(a string) source { return sourceOf(netip.MustParseAddr(a)) }
	steps := []struct {
		addr string
		ok   bool
	}{
		{"2001:db8:0:100::1", true},
		{"2001:db8:0:100::2", false}, // same /64
		{"2001:db8:0:1ff::1", true},  // same /56, another /64: the /56's second
		{"2001:db8:0:101::1", false}, // the /56 is full
		{"2001:db8:0:200::1", true},  // another /56 of the /48: the /48's third
		{"2001:db8:0:300::1", false}, // the /48 is full
		{"2001:db8:1::1", true},      // another /48
		{"192.0.2.1", true},          // IPv4 has only its address
	}
	for _, s := range steps {
		why := l.acquire(src(s.addr))
		if (why == "") != s.ok {
			t.Fatalf("acquire %s: %q, want admitted=%v", s.addr, why, s.ok)
		}
	}
	if why := l.acquire(src("2001:db8:0:300::1")); why != "your IPv6 /48 already holds 3 connections" {
		t.Fatalf("refusal names %q", why)
	}
	// Releasing one in the /48 frees a place for any of its /64s.
	l.release(src("2001:db8:0:200::1"))
	if why := l.acquire(src("2001:db8:0:300::1")); why != "" {
		t.Fatalf("after a release: %q", why)
	}
	if n, _ := l.counts(); n != 5 {
		t.Fatalf("%d addresses counted, want 5 (/64s and IPv4)", n)
	}
}

func TestIPv6PrefixHandshakeRate(t *testing.T) {
	cfg, err := Config{
		HandshakeRatePerIP: 0.001, HandshakeBurstPerIP: 2,
		HandshakeRatePer56: 0.001, HandshakeBurstPer56: 3,
		HandshakeRatePer48: 0.001, HandshakeBurstPer48: 4,
	}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	l := newSourceLimits(cfg)
	now := time.Unix(1000, 0)
	allow := func(a string) bool { return l.allowHandshake(sourceOf(netip.MustParseAddr(a)), now) }
	for i, s := range []struct {
		addr string
		ok   bool
	}{
		{"2001:db8:0:100::1", true},
		{"2001:db8:0:100::1", true},
		{"2001:db8:0:100::1", false}, // the /64's burst of 2
		{"2001:db8:0:101::1", true},  // the /56's third
		{"2001:db8:0:102::1", false}, // the /56's burst of 3
		{"2001:db8:0:200::1", true},  // the /48's fourth
		{"2001:db8:0:300::1", false}, // the /48's burst of 4
		{"2001:db8:1::1", true},
	} {
		if got := allow(s.addr); got != s.ok {
			t.Fatalf("attempt %d from %s: allowed=%v, want %v", i, s.addr, got, s.ok)
		}
	}
	// A refused attempt cost none of its prefixes a token: the /64 and /56
	// of the attempt the /48 refused still hold their whole bursts.
	refused := sourceOf(netip.MustParseAddr("2001:db8:0:300::1"))
	if got := l.levels[levelAddr].buckets.Get(refused[levelAddr], now).TokensAt(now); got != 2 {
		t.Fatalf("the refused attempt's /64 holds %v tokens, want 2", got)
	}
	if got := l.levels[level56].buckets.Get(refused[level56], now).TokensAt(now); got != 3 {
		t.Fatalf("the refused attempt's /56 holds %v tokens, want 3", got)
	}
}
