package mesh

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
)

// MaxClockSkew is how far a sealed message's timestamp may be from the
// receiver's clock, in either direction. Members therefore need clocks within
// two minutes of each other (NTP keeps them within milliseconds); a replayed
// message older than this is rejected even by a receiver that has forgotten
// the sender. Two minutes matches what Kerberos-style protocols tolerate
// without making a captured message useful for long.
const MaxClockSkew = 2 * time.Minute

// Replay and staleness errors.
var (
	ErrStale          = errors.New("mesh message timestamp outside the allowed clock skew")
	ErrReplay         = errors.New("mesh message not newer than the last accepted from its sender")
	ErrSenderMismatch = errors.New("mesh message sealed by a key other than the relay-authenticated sender")
)

// replayGuard remembers, per sender, the newest timestamp accepted. A message
// is accepted only if strictly newer, so a relay (or anyone on the path) that
// resends a captured message gets it dropped; combined with MaxClockSkew an
// entry can be forgotten once it is older than the skew window, which is
// what keeps the table bounded.
type replayGuard struct {
	last map[nodekey.Public]time.Time
	max  int
}

func newReplayGuard(max int) *replayGuard {
	return &replayGuard{last: make(map[nodekey.Public]time.Time), max: max}
}

// check reports whether a message from `from` stamped t may be accepted at
// local time now. It records nothing.
func (g *replayGuard) check(from nodekey.Public, t, now time.Time) error {
	if d := t.Sub(now); d > MaxClockSkew || d < -MaxClockSkew {
		return fmt.Errorf("%w: sender %s stamped %v, local clock %v (differ by %v; members need clocks within %v)",
			ErrStale, from.ShortString(), t.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano), d.Round(time.Millisecond), MaxClockSkew)
	}
	if last, ok := g.last[from]; ok && !t.After(last) {
		return fmt.Errorf("%w: sender %s stamped %v, last accepted %v", ErrReplay, from.ShortString(),
			t.UTC().Format(time.RFC3339Nano), last.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// record notes t as the newest accepted from `from`. It fails only when the
// table is full of senders heard within the skew window.
func (g *replayGuard) record(from nodekey.Public, t, now time.Time) error {
	if _, ok := g.last[from]; !ok && len(g.last) >= g.max {
		g.prune(now)
		if len(g.last) >= g.max {
			return fmt.Errorf("%w: %d senders heard within %v", ErrTooManyMembers, len(g.last), MaxClockSkew)
		}
	}
	g.last[from] = t
	return nil
}

// prune forgets senders whose newest accepted timestamp is older than the
// skew window: any message check would now accept from them is newer than
// that timestamp anyway, so the entry no longer stops anything.
func (g *replayGuard) prune(now time.Time) {
	for k, t := range g.last {
		if now.Sub(t) > MaxClockSkew {
			delete(g.last, k)
		}
	}
}

// Stamper hands a sender strictly increasing message times, so that two
// messages sealed within one tick of a coarse clock are not taken by
// receivers as a replay of each other. The zero value is ready to use.
type Stamper struct {
	mu   sync.Mutex
	last time.Time
}

// Next returns now, or 1ns after the last time returned if now is not later.
func (s *Stamper) Next(now time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	now = now.Round(0) // strip the monotonic reading: only wall time goes on the wire
	if !now.After(s.last) {
		now = s.last.Add(time.Nanosecond)
	}
	s.last = now
	return now
}
