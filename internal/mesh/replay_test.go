package mesh

import (
	"errors"
	"testing"
	"time"
)

func TestStamper(t *testing.T) {
	var s Stamper
	now := time.Now() // carries a monotonic reading, which Next must drop
	a := s.Next(now)
	b := s.Next(now)
	c := s.Next(now.Add(-time.Hour)) // clock stepped back
	d := s.Next(now.Add(time.Second))
	if !b.After(a) || !c.After(b) || !d.Equal(now.Add(time.Second).Round(0)) {
		t.Fatalf("stamps %v %v %v %v are not strictly increasing with the clock", a, b, c, d)
	}
	if a != a.Round(0) {
		t.Fatal("stamp kept its monotonic clock reading")
	}
}

func TestReplayGuardBounded(t *testing.T) {
	g := newReplayGuard(2)
	k0, k1, k2 := testKey(0), testKey(1), testKey(2)
	for _, k := range []struct {
		name string
		err  error
	}{
		{"first", g.record(k0, t0, t0)},
		{"second", g.record(k1, t0, t0)},
		{"second again", g.record(k1, t0.Add(time.Second), t0)},
	} {
		if k.err != nil {
			t.Fatalf("%s: %v", k.name, k.err)
		}
	}
	if err := g.record(k2, t0, t0); !errors.Is(err, ErrTooManyMembers) {
		t.Fatalf("third sender in a full table: %v, want ErrTooManyMembers", err)
	}
	// Once the others are older than the skew window they are pruned to
	// make room, and forgetting them lets nothing stale through.
	later := t0.Add(MaxClockSkew + 2*time.Second)
	if err := g.record(k2, later, later); err != nil {
		t.Fatalf("after the window: %v", err)
	}
	if err := g.check(k0, t0, later); !errors.Is(err, ErrStale) {
		t.Fatalf("old message of a pruned sender: %v, want ErrStale", err)
	}
	if len(g.last) > 2 {
		t.Fatalf("table holds %d senders, bound is 2", len(g.last))
	}
}
