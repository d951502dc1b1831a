package mesh

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
)

// Membership timing. A member re-announces every AnnounceInterval and is
// dropped after MemberTimeout of silence: three intervals, so two lost
// announcements (a relay reconnect, a dropped frame) never evict a live
// member, while a crashed one is gone within a minute. 15 s keeps the
// broadcast load of a 1024-member mesh near 70 announcements a second.
const (
	AnnounceInterval = 15 * time.Second
	MemberTimeout    = 3 * AnnounceInterval
)

// DefaultMaxMembers bounds the remote members one table holds. Each costs a
// few hundred bytes, and Assign runs over all of them on every change; 1024
// is far beyond a personal or team mesh yet keeps a hostile member that
// invents keys from growing the table without limit.
const DefaultMaxMembers = 1024

// Membership errors.
var (
	ErrTooManyMembers = errors.New("mesh member table full")
	ErrFromSelf       = errors.New("mesh message carries this node's own key")
	ErrV6Mismatch     = errors.New("announced IPv6 is not the one derived from the sender's key")
)

// Config configures a Members table. Self and ULA are required; the zero
// value of every other field gives the default.
type Config struct {
	// Self is the local node's key and IPv4 pin, so that the local address
	// comes out of the same Assign computation as every other member's.
	Self Claim
	// ULA is the mesh's IPv6 /48 (ULAPrefix of the topic).
	ULA netip.Prefix
	// V4Prefix is the mesh IPv4 prefix; zero means DefaultV4Prefix.
	V4Prefix netip.Prefix
	// MaxMembers bounds remote members; zero means DefaultMaxMembers.
	MaxMembers int
}

// Member is a snapshot of one member as the local node sees it.
type Member struct {
	Key  nodekey.Public
	Name string
	// V4 is the address Assign gave the member; zero if it got none.
	V4 netip.Addr
	V6 netip.Addr
	// Pinned is the IPv4 the member pinned (zero if none). V4 differs from it
	// only when the pin was contested or unusable.
	Pinned     netip.Addr
	Candidates []string
	// FirstSeen and LastSeen are local clock times of the first and latest
	// accepted announcement.
	FirstSeen, LastSeen time.Time
}

// EventKind says what an accepted message did to the table.
type EventKind int

// Event kinds.
const (
	EventUnchanged EventKind = iota // a known member refreshed, an unknown one left, or a signal
	EventJoined                     // a new member
	EventUpdated                    // a member changed its name, pin or candidates
	EventLeft                       // a member said goodbye and was removed
)

func (k EventKind) String() string {
	switch k {
	case EventUnchanged:
		return "unchanged"
	case EventJoined:
		return "joined"
	case EventUpdated:
		return "updated"
	case EventLeft:
		return "left"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event reports the effect of one accepted message.
type Event struct {
	Kind EventKind
	// Member is the member after the change (before removal for EventLeft).
	Member Member
	// Reassigned is set when the change moved the IPv4 of a member that
	// already had one, the local node included (see Assign): the caller must
	// re-read List and SelfV4.
	Reassigned bool
}

// Members is the membership table of one mesh: the overlay feeds it every
// opened sealed message (Observe) and calls Expire at least once per
// AnnounceInterval; it keeps every member's addresses, the local node's
// included, per the collision rule of Assign. It is safe for concurrent use.
type Members struct {
	mu        sync.Mutex
	self      Claim
	ula       netip.Prefix
	prefix    netip.Prefix
	max       int
	members   map[nodekey.Public]*Member
	assigned  map[nodekey.Public]netip.Addr
	assignErr error
	replay    *replayGuard
}

// NewMembers returns an empty table holding only the local node.
func NewMembers(cfg Config) (*Members, error) {
	if cfg.Self.Key.IsZero() {
		return nil, errors.New("mesh members: Config.Self.Key is not set")
	}
	if !cfg.ULA.IsValid() || !V6(cfg.ULA, cfg.Self.Key).IsValid() {
		return nil, fmt.Errorf("mesh members: Config.ULA %v is not an IPv6 /48", cfg.ULA)
	}
	if !cfg.V4Prefix.IsValid() {
		cfg.V4Prefix = DefaultV4Prefix
	}
	if err := ValidateV4Prefix(cfg.V4Prefix); err != nil {
		return nil, fmt.Errorf("mesh members: %w", err)
	}
	if cfg.Self.Pinned.IsValid() && !usableV4(cfg.V4Prefix, cfg.Self.Pinned) {
		return nil, fmt.Errorf("mesh members: pinned IPv4 %s is not a host address of %s", cfg.Self.Pinned, cfg.V4Prefix)
	}
	if cfg.MaxMembers <= 0 {
		cfg.MaxMembers = DefaultMaxMembers
	}
	m := &Members{
		self:    cfg.Self,
		ula:     cfg.ULA.Masked(),
		prefix:  cfg.V4Prefix,
		max:     cfg.MaxMembers,
		members: make(map[nodekey.Public]*Member),
		// Senders that left or expired stay in the replay table for the skew
		// window, so it may briefly hold more keys than the member table.
		replay: newReplayGuard(2 * cfg.MaxMembers),
	}
	m.reassignLocked()
	return m, nil
}

// Observe applies a message received from the relay. from is the sender key
// the relay authenticated (the source of its Recv or BroadcastRecv frame);
// now is the local clock. A message is rejected, leaving the table as it
// was, when from differs from the sealed sender (a member cannot speak for
// another through the relay), when it carries the local key, when its
// timestamp is outside MaxClockSkew or not newer than the last accepted from
// that sender, when an announced IPv6 is not the derived one, or when a new
// member would exceed MaxMembers.
//
// For KindSignal, Observe applies those sender and time checks and nothing
// else; the caller handles the body. One per-sender high-water mark covers
// every kind, so a signal overtaken by a later announcement is dropped:
// signaling must tolerate loss anyway.
func (m *Members) Observe(from nodekey.Public, msg Message, now time.Time) (Event, error) {
	if from != msg.From {
		return Event{}, fmt.Errorf("mesh members: %w: relay says %s, sealed %s", ErrSenderMismatch, from.ShortString(), msg.From.ShortString())
	}
	if from == m.self.Key {
		return Event{}, fmt.Errorf("mesh members: %w", ErrFromSelf)
	}
	var want netip.Addr
	if msg.Kind == KindAnnounce {
		want = V6(m.ula, from)
		if msg.Announce.V6 != want {
			return Event{}, fmt.Errorf("mesh members: member %s: %w: announced %s, derived %s", from.ShortString(), ErrV6Mismatch, msg.Announce.V6, want)
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.replay.check(from, msg.Time, now); err != nil {
		return Event{}, fmt.Errorf("mesh members: %w", err)
	}
	cur, known := m.members[from]
	if msg.Kind == KindAnnounce && !known && len(m.members) >= m.max {
		return Event{}, fmt.Errorf("mesh members: %w: %d members, refusing %s", ErrTooManyMembers, len(m.members), from.ShortString())
	}
	if err := m.replay.record(from, msg.Time, now); err != nil {
		return Event{}, fmt.Errorf("mesh members: %w", err)
	}

	switch msg.Kind {
	case KindLeave:
		if !known {
			return Event{Kind: EventUnchanged}, nil
		}
		gone := m.snapshotLocked(cur)
		delete(m.members, from)
		return Event{Kind: EventLeft, Member: gone, Reassigned: m.reassignLocked()}, nil
	case KindAnnounce:
		a := msg.Announce
		var pin netip.Addr
		if a.PinnedV4 {
			pin = a.V4
		}
		if !known {
			cur = &Member{Key: from, V6: want, FirstSeen: now}
			m.members[from] = cur
		}
		changed := known && (cur.Name != a.Name || cur.Pinned != pin || !slices.Equal(cur.Candidates, a.Candidates))
		pinChanged := !known || cur.Pinned != pin
		cur.Name, cur.Pinned, cur.Candidates, cur.LastSeen = a.Name, pin, slices.Clone(a.Candidates), now
		ev := Event{Kind: EventUnchanged}
		switch {
		case !known:
			ev.Kind = EventJoined
		case changed:
			ev.Kind = EventUpdated
		}
		if pinChanged {
			ev.Reassigned = m.reassignLocked()
		}
		ev.Member = m.snapshotLocked(cur)
		return ev, nil
	}
	return Event{Kind: EventUnchanged}, nil
}

// Expire removes the members silent for longer than MemberTimeout at local
// time now and returns them (with their last assigned addresses).
func (m *Members) Expire(now time.Time) []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	var gone []Member
	for k, mem := range m.members {
		if now.Sub(mem.LastSeen) > MemberTimeout {
			gone = append(gone, m.snapshotLocked(mem))
			delete(m.members, k)
		}
	}
	m.replay.prune(now)
	if len(gone) > 0 {
		m.reassignLocked()
	}
	slices.SortFunc(gone, func(a, b Member) int { return bytes.Compare(a.Key[:], b.Key[:]) })
	return gone
}

// List returns every remote member, sorted by key.
func (m *Members) List() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Member, 0, len(m.members))
	for _, mem := range m.members {
		out = append(out, m.snapshotLocked(mem))
	}
	slices.SortFunc(out, func(a, b Member) int { return bytes.Compare(a.Key[:], b.Key[:]) })
	return out
}

// Len returns the number of remote members.
func (m *Members) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.members)
}

// SelfV4 returns the local node's IPv4 under the current membership; zero
// if it got none (see AssignErr).
func (m *Members) SelfV4() netip.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.assigned[m.self.Key]
}

// SelfV6 returns the local node's IPv6.
func (m *Members) SelfV6() netip.Addr { return V6(m.ula, m.self.Key) }

// AssignErr returns the error of the latest Assign (contested pins, members
// without an address), nil if every claim was honoured.
func (m *Members) AssignErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.assignErr
}

func (m *Members) snapshotLocked(mem *Member) Member {
	s := *mem
	s.Candidates = slices.Clone(mem.Candidates)
	s.V4 = m.assigned[mem.Key]
	return s
}

// reassignLocked recomputes every IPv4 and reports whether any member that
// is in both the old and new assignment moved.
func (m *Members) reassignLocked() bool {
	claims := make([]Claim, 0, len(m.members)+1)
	claims = append(claims, m.self)
	for k, mem := range m.members {
		claims = append(claims, Claim{Key: k, Pinned: mem.Pinned})
	}
	next, err := Assign(m.prefix, claims)
	moved := false
	for k, a := range m.assigned {
		if b, ok := next[k]; ok && a != b {
			moved = true
		}
	}
	m.assigned, m.assignErr = next, err
	return moved
}

// Remove takes a member out of the table at once, as if it had left (an
// owned mesh removes a revoked member, or the loser of a contested grant),
// and reports whether it was there. Its replay high-water mark stays, so a
// replay of its earlier announcement does not bring it back.
func (m *Members) Remove(key nodekey.Public) (Member, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.members[key]
	if !ok {
		return Member{}, false
	}
	gone := m.snapshotLocked(cur)
	delete(m.members, key)
	m.reassignLocked()
	return gone, true
}
