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
		p, _ := a.Prefix(32)
		l.allowHandshake(p, now)
		l.allowHandshake(p, now) // drain the bucket: not idle, not swept
	}
	if _, n := l.counts(); n > maxRateEntries {
		t.Fatalf("%d buckets, cap %d", n, maxRateEntries)
	}
	// Once buckets have refilled they are swept when room is needed.
	later := now.Add(time.Hour)
	p, _ := netip.MustParseAddr("192.0.2.1").Prefix(32)
	if !l.allowHandshake(p, later) {
		t.Fatal("a new address was refused")
	}
	if _, n := l.counts(); n != 1 {
		t.Fatalf("%d buckets after a sweep of idle ones, want 1", n)
	}
}
