package overlay

import (
	"net/netip"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/testkit"
)

// TestRetriesSchedule: a found address is announced to again after 1, 2,
// 4 and 8 s, then left to the regular round; an answer ends it at once.
func TestRetriesSchedule(t *testing.T) {
	var r retries
	a := netip.MustParseAddrPort("192.0.2.1:51898")
	b := netip.MustParseAddrPort("192.0.2.2:51898")
	t0 := time.Unix(1000, 0)
	r.add(a, t0)
	r.add(b, t0)
	r.add(a, t0.Add(500*time.Millisecond)) // found again: no new schedule
	var got []time.Duration
	for at := t0; at.Before(t0.Add(2 * mesh.AnnounceInterval)); at = at.Add(100 * time.Millisecond) {
		for _, d := range r.take(at) {
			if d == a {
				got = append(got, at.Sub(t0))
			}
		}
		if at.Equal(t0.Add(1500 * time.Millisecond)) {
			r.answered(b)
		}
	}
	checkSchedule(t, "retries of a", got)
	if n := r.pending(); n != 0 {
		t.Fatalf("%d addresses still pending after the schedule and an answer, want 0", n)
	}
}

// TestRetriesBounded: the table takes at most maxRetries addresses.
func TestRetriesBounded(t *testing.T) {
	var r retries
	now := time.Unix(1000, 0)
	for i := range maxRetries + 100 {
		r.add(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 1), now)
	}
	if n := r.pending(); n != maxRetries {
		t.Fatalf("%d pending, want the bound %d", n, maxRetries)
	}
}

// TestForwarderIntroducesOnFirstUnicast: a member is introduced when it
// first speaks unicast here, or from a new address, whether or not that
// message is the one it joined with (a member met on the LAN group joins
// by multicast, and was once never introduced).
func TestForwarderIntroducesOnFirstUnicast(t *testing.T) {
	f := newForwarder()
	k := testkit.Key(t).Public()
	a := netip.MustParseAddrPort("10.0.0.2:51898")
	for i, c := range []struct {
		addr netip.AddrPort
		want bool
	}{
		{a, true},  // first unicast
		{a, false}, // the next round
		{netip.MustParseAddrPort("198.51.100.2:40000"), true}, // restarted behind a new mapping
	} {
		if got := f.heardFrom(k, []byte("sealed"), c.addr, "direct", nil); got != c.want {
			t.Fatalf("announcement %d from %v: introduce=%v, want %v", i, c.addr, got, c.want)
		}
	}
}

// TestRetriesChecks: a path check is retried on the same schedule, once
// per address, and a new address restarts it.
func TestRetriesChecks(t *testing.T) {
	var r retries
	k := testkit.Key(t).Public()
	a := netip.MustParseAddrPort("192.0.2.1:51898")
	t0 := time.Unix(1000, 0)
	r.addCheck(k, a, t0)
	r.addCheck(k, a, t0.Add(500*time.Millisecond)) // the same address: no new schedule
	var got []time.Duration
	for at := t0; at.Before(t0.Add(2 * mesh.AnnounceInterval)); at = at.Add(100 * time.Millisecond) {
		if addr, ok := r.takeChecks(at)[k]; ok {
			if addr != a {
				t.Fatalf("check of %v, want %v", addr, a)
			}
			got = append(got, at.Sub(t0))
		}
	}
	checkSchedule(t, "checks", got)
}

// checkSchedule fails unless got are retries at 1 s, then 2, 4 and 8 s
// after the previous one.
func checkSchedule(t *testing.T, what string, got []time.Duration) {
	t.Helper()
	want := []time.Duration{1 * time.Second, 3 * time.Second, 7 * time.Second, 15 * time.Second}
	if len(got) != len(want) {
		t.Fatalf("%s at %v, want %v", what, got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s at %v, want %v", what, got, want)
		}
	}
}
