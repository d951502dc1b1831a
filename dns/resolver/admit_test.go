package resolver

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestAdmissionBounded(t *testing.T) {
	src := func(b byte) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, 0, b}) }
	now := time.Unix(1000, 0)

	// Buckets that never refill within the test: a full map pushes new
	// sources onto the shared overflow bucket instead of growing.
	a := newAdmission(loopback, rate.Every(time.Hour), 1, 2)
	for _, step := range []struct {
		src  byte
		want verdict
	}{
		{1, admitted},   // own bucket
		{2, admitted},   // own bucket; map now full
		{1, deniedRate}, // its bucket is empty
		{3, admitted},   // overflow bucket's one token
		{4, deniedRate}, // overflow is empty too
	} {
		if got := a.check(src(step.src), now); got != step.want {
			t.Fatalf("source %d: verdict %d, want %d", step.src, got, step.want)
		}
	}
	if n := a.sources(); n != 2 {
		t.Fatalf("%d sources tracked, want the bound 2", n)
	}

	// Buckets that refill at once: a sweep forgets the refilled ones, so a
	// new source gets its own bucket again.
	a = newAdmission(loopback, 1000, 1, 2)
	a.check(src(1), now)
	a.check(src(2), now)
	if got := a.check(src(3), now.Add(2*time.Second)); got != admitted {
		t.Fatalf("new source after refill: verdict %d, want admitted", got)
	}
	if n := a.sources(); n != 1 {
		t.Fatalf("%d sources tracked after the sweep, want 1 (the refilled two forgotten)", n)
	}
}

func TestAdmissionSources(t *testing.T) {
	a := newAdmission([]netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("::1/128")}, 1000, 100, 10)
	for _, tc := range []struct {
		name string
		addr net.Addr
		want verdict
	}{
		{"overlay v4", &net.UDPAddr{IP: net.ParseIP("100.64.1.2"), Port: 5}, admitted},
		{"overlay v4 seen through a dual-stack socket", &net.UDPAddr{IP: net.ParseIP("::ffff:100.64.1.2"), Port: 5}, admitted},
		{"v6 loopback with a zone", &net.TCPAddr{IP: net.ParseIP("::1"), Zone: "lo"}, admitted},
		{"just outside the prefix", &net.UDPAddr{IP: net.ParseIP("100.128.0.1")}, deniedSource},
		{"LAN address", &net.TCPAddr{IP: net.ParseIP("192.168.1.5")}, deniedSource},
		{"v4 loopback not listed", &net.UDPAddr{IP: net.ParseIP("127.0.0.1")}, deniedSource},
		{"no address", nil, deniedSource},
		{"other address type", &net.UnixAddr{Name: "/x", Net: "unix"}, deniedSource},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := a.check(addrOf(tc.addr), time.Unix(1000, 0)); got != tc.want {
				t.Fatalf("verdict %d, want %d", got, tc.want)
			}
		})
	}
}
