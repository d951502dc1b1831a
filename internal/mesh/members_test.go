package mesh

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
)

var (
	testULA = ULAPrefix(TopicID("members-test"))
	t0      = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
)

// announce returns an announce from k stamped at, with its derived IPv6.
func announce(k nodekey.Public, at time.Time, name string) Message {
	return Message{Kind: KindAnnounce, From: k, Time: at, Announce: Announce{
		V4: netip.MustParseAddr("100.64.0.1"), V6: V6(testULA, k), Name: name,
	}}
}

func newTestMembers(t *testing.T, cfg Config) *Members {
	t.Helper()
	if cfg.ULA == (netip.Prefix{}) {
		cfg.ULA = testULA
	}
	m, err := NewMembers(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestNewMembersConfig(t *testing.T) {
	self := testKey(100)
	m := newTestMembers(t, Config{Self: Claim{Key: self}})
	if got, want := m.SelfV4(), CandidateV4(DefaultV4Prefix, self, 0); got != want {
		t.Fatalf("SelfV4 = %s, want %s (default prefix)", got, want)
	}
	if got, want := m.SelfV6(), V6(testULA, self); got != want {
		t.Fatalf("SelfV6 = %s, want %s", got, want)
	}
	pinned := newTestMembers(t, Config{Self: Claim{Key: self, Pinned: netip.MustParseAddr("100.64.0.9")}})
	if got := pinned.SelfV4(); got != netip.MustParseAddr("100.64.0.9") {
		t.Fatalf("pinned SelfV4 = %s", got)
	}
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"no self key", Config{ULA: testULA}},
		{"no ULA", Config{Self: Claim{Key: self}}},
		{"ULA /64", Config{Self: Claim{Key: self}, ULA: netip.MustParsePrefix("fd00::/64")}},
		{"bad IPv4 prefix", Config{Self: Claim{Key: self}, ULA: testULA, V4Prefix: netip.MustParsePrefix("10.0.0.0/31")}},
		{"pin outside prefix", Config{Self: Claim{Key: self, Pinned: netip.MustParseAddr("10.0.0.1")}, ULA: testULA}},
		{"pin on network address", Config{Self: Claim{Key: self, Pinned: netip.MustParseAddr("100.64.0.0")}, ULA: testULA}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := NewMembers(c.cfg); err == nil {
				t.Fatal("NewMembers accepted a bad config")
			}
		})
	}
}

func TestObserveLifecycle(t *testing.T) {
	self, peer := testKey(100), testKey(101)
	m := newTestMembers(t, Config{Self: Claim{Key: self}})
	at := t0
	step := func(msg Message, want EventKind) Event {
		t.Helper()
		ev, err := m.Observe(peer, msg, at)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind != want {
			t.Fatalf("event %v, want %v", ev.Kind, want)
		}
		at = at.Add(time.Second)
		return ev
	}

	ev := step(announce(peer, at, "a"), EventJoined)
	if ev.Member.Key != peer || ev.Member.Name != "a" || ev.Member.V4 != CandidateV4(DefaultV4Prefix, peer, 0) ||
		ev.Member.V6 != V6(testULA, peer) || !ev.Member.FirstSeen.Equal(t0) {
		t.Fatalf("joined member %+v", ev.Member)
	}
	step(announce(peer, at, "a"), EventUnchanged)
	step(announce(peer, at, "b"), EventUpdated)
	withCand := announce(peer, at, "b")
	withCand.Announce.Candidates = []string{"udp4 192.0.2.1:1 host"}
	step(withCand, EventUpdated)
	pin := netip.MustParseAddr("100.64.3.3")
	pinned := announce(peer, at, "b")
	pinned.Announce.Candidates = withCand.Announce.Candidates
	pinned.Announce.V4, pinned.Announce.PinnedV4 = pin, true
	ev = step(pinned, EventUpdated)
	if ev.Member.Pinned != pin || ev.Member.V4 != pin {
		t.Fatalf("pinned member %+v", ev.Member)
	}

	list := m.List()
	if len(list) != 1 || list[0].Key != peer || !list[0].LastSeen.Equal(at.Add(-time.Second)) || !list[0].FirstSeen.Equal(t0) {
		t.Fatalf("List = %+v", list)
	}
	list[0].Candidates[0] = "mutated"
	if m.List()[0].Candidates[0] == "mutated" {
		t.Fatal("List shares its candidates with the table")
	}

	ev = step(Message{Kind: KindLeave, From: peer, Time: at}, EventLeft)
	if ev.Member.Key != peer || m.Len() != 0 {
		t.Fatalf("after leave: event %+v, %d members", ev, m.Len())
	}
	step(Message{Kind: KindLeave, From: peer, Time: at}, EventUnchanged)
	step(Message{Kind: KindSignal, From: peer, Time: at, Signal: []byte("x")}, EventUnchanged)
	if m.Len() != 0 {
		t.Fatal("a signal added a member")
	}
}

func TestObserveRejects(t *testing.T) {
	self, peer, other := testKey(100), testKey(101), testKey(102)
	m := newTestMembers(t, Config{Self: Claim{Key: self}})
	if _, err := m.Observe(peer, announce(peer, t0, "p"), t0); err != nil {
		t.Fatal(err)
	}
	badV6 := announce(other, t0, "o")
	badV6.Announce.V6 = V6(testULA, peer)
	for _, c := range []struct {
		name string
		from nodekey.Public
		msg  Message
		want error
	}{
		{"relay sender differs from sealed sender", other, announce(peer, t0.Add(time.Second), "p"), ErrSenderMismatch},
		{"own key", self, announce(self, t0.Add(time.Second), "me"), ErrFromSelf},
		{"same timestamp again", peer, announce(peer, t0, "p"), ErrReplay},
		{"older timestamp", peer, announce(peer, t0.Add(-time.Second), "p"), ErrReplay},
		{"older leave", peer, Message{Kind: KindLeave, From: peer, Time: t0.Add(-time.Millisecond)}, ErrReplay},
		{"stale", other, announce(other, t0.Add(-MaxClockSkew-time.Nanosecond), "o"), ErrStale},
		{"from the future", other, announce(other, t0.Add(MaxClockSkew+time.Nanosecond), "o"), ErrStale},
		{"IPv6 of another key", other, badV6, ErrV6Mismatch},
	} {
		t.Run(c.name, func(t *testing.T) {
			ev, err := m.Observe(c.from, c.msg, t0)
			if !errors.Is(err, c.want) {
				t.Fatalf("Observe = %+v, %v; want %v", ev, err, c.want)
			}
			if l := m.List(); len(l) != 1 || l[0].Key != peer || l[0].Name != "p" {
				t.Fatalf("table changed by a rejected message: %+v", l)
			}
		})
	}
	// At the edge of the skew window in either direction: accepted.
	for i, d := range []time.Duration{-MaxClockSkew, MaxClockSkew} {
		k := testKey(110 + i)
		if _, err := m.Observe(k, announce(k, t0.Add(d), "edge"), t0); err != nil {
			t.Fatalf("skew %v rejected: %v", d, err)
		}
	}
}

func TestReplayAfterLeaveDoesNotResurrect(t *testing.T) {
	self, peer := testKey(100), testKey(101)
	m := newTestMembers(t, Config{Self: Claim{Key: self}})
	ann := announce(peer, t0, "p")
	if _, err := m.Observe(peer, ann, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Observe(peer, Message{Kind: KindLeave, From: peer, Time: t0.Add(time.Second)}, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	m.Expire(t0.Add(2 * time.Second)) // pruning must keep the recent high-water mark
	if _, err := m.Observe(peer, ann, t0.Add(3*time.Second)); !errors.Is(err, ErrReplay) {
		t.Fatalf("replayed announce after leave: %v, want ErrReplay", err)
	}
	if m.Len() != 0 {
		t.Fatal("replay resurrected a member that left")
	}
}

func TestExpire(t *testing.T) {
	self := testKey(100)
	m := newTestMembers(t, Config{Self: Claim{Key: self}})
	a, b := testKey(1), testKey(2)
	if _, err := m.Observe(a, announce(a, t0, "a"), t0); err != nil {
		t.Fatal(err)
	}
	later := t0.Add(AnnounceInterval)
	if _, err := m.Observe(b, announce(b, later, "b"), later); err != nil {
		t.Fatal(err)
	}
	if gone := m.Expire(t0.Add(MemberTimeout)); len(gone) != 0 {
		t.Fatalf("expired at exactly MemberTimeout: %+v", gone)
	}
	gone := m.Expire(t0.Add(MemberTimeout + time.Nanosecond))
	if len(gone) != 1 || gone[0].Key != a || !gone[0].V4.IsValid() {
		t.Fatalf("Expire = %+v, want only a with its address", gone)
	}
	if l := m.List(); len(l) != 1 || l[0].Key != b {
		t.Fatalf("List after expire = %+v", l)
	}
	// An expired member comes back with its next announcement.
	back := t0.Add(MemberTimeout + time.Second)
	if ev, err := m.Observe(a, announce(a, back, "a"), back); err != nil || ev.Kind != EventJoined {
		t.Fatalf("rejoin: %+v, %v", ev, err)
	}
}

func TestMaxMembers(t *testing.T) {
	m := newTestMembers(t, Config{Self: Claim{Key: testKey(100)}, MaxMembers: 3})
	at := t0
	obs := func(k nodekey.Public, msg Message) error {
		at = at.Add(time.Millisecond)
		msg.Time = at
		_, err := m.Observe(k, msg, at)
		return err
	}
	for i := range 3 {
		if err := obs(testKey(i), announce(testKey(i), at, "")); err != nil {
			t.Fatal(err)
		}
	}
	if err := obs(testKey(3), announce(testKey(3), at, "")); !errors.Is(err, ErrTooManyMembers) {
		t.Fatalf("fourth member: %v, want ErrTooManyMembers", err)
	}
	if err := obs(testKey(0), announce(testKey(0), at, "renamed")); err != nil {
		t.Fatalf("known member refused when full: %v", err)
	}
	if err := obs(testKey(1), Message{Kind: KindLeave, From: testKey(1)}); err != nil {
		t.Fatal(err)
	}
	if err := obs(testKey(3), announce(testKey(3), at, "")); err != nil {
		t.Fatalf("join after a leave: %v", err)
	}
}

// collidingPair finds keys lo < hi whose first candidates collide in p.
func collidingPair(t *testing.T, p netip.Prefix) (lo, hi nodekey.Public) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		a, b := testKey(2*i+1000), testKey(2*i+1001)
		if CandidateV4(p, a, 0) == CandidateV4(p, b, 0) {
			if bytes.Compare(a[:], b[:]) > 0 {
				a, b = b, a
			}
			return a, b
		}
	}
	t.Fatal("no colliding pair found")
	return
}

func TestSelfReassignedByLowerKey(t *testing.T) {
	p := netip.MustParsePrefix("10.5.5.0/29")
	lo, hi := collidingPair(t, p)
	m := newTestMembers(t, Config{Self: Claim{Key: hi}, V4Prefix: p})
	first := m.SelfV4()
	if first != CandidateV4(p, hi, 0) {
		t.Fatalf("SelfV4 alone = %s", first)
	}
	ev, err := m.Observe(lo, announce(lo, t0, "lo"), t0)
	if err != nil {
		t.Fatal(err)
	}
	if !ev.Reassigned || ev.Member.V4 != first || m.SelfV4() == first || !m.SelfV4().IsValid() {
		t.Fatalf("lower key joined: %+v, SelfV4 %s (was %s)", ev, m.SelfV4(), first)
	}
	ev, err = m.Observe(lo, Message{Kind: KindLeave, From: lo, Time: t0.Add(time.Second)}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !ev.Reassigned || m.SelfV4() != first {
		t.Fatalf("lower key left: %+v, SelfV4 %s, want %s back", ev, m.SelfV4(), first)
	}
}

// TestMembersAgree runs one table per node, each fed the others'
// announcements in a different order, and checks all compute the same
// addresses as one Assign over every claim, on a prefix small enough to
// collide.
func TestMembersAgree(t *testing.T) {
	p := netip.MustParsePrefix("10.6.0.0/29")
	keys := testKeysN(5)
	pin := netip.MustParseAddr("10.6.0.3")
	claims := claimsOf(keys)
	claims[4].Pinned = pin
	want, err := Assign(p, claims)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range claims {
		m := newTestMembers(t, Config{Self: c, V4Prefix: p})
		order := slices.Clone(claims)
		slices.Reverse(order[:i])
		for j, o := range order {
			if o.Key == c.Key {
				continue
			}
			msg := announce(o.Key, t0, fmt.Sprint(j))
			if o.Pinned.IsValid() {
				msg.Announce.V4, msg.Announce.PinnedV4 = o.Pinned, true
			}
			if _, err := m.Observe(o.Key, msg, t0); err != nil {
				t.Fatal(err)
			}
		}
		if got := m.SelfV4(); got != want[c.Key] {
			t.Errorf("node %d: SelfV4 %s, want %s", i, got, want[c.Key])
		}
		for _, mem := range m.List() {
			if mem.V4 != want[mem.Key] {
				t.Errorf("node %d: member %s at %s, want %s", i, mem.Key.ShortString(), mem.V4, want[mem.Key])
			}
		}
		if err := m.AssignErr(); err != nil {
			t.Errorf("node %d: AssignErr %v", i, err)
		}
	}
}

func TestMembersConcurrent(t *testing.T) {
	m := newTestMembers(t, Config{Self: Claim{Key: testKey(100)}})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := testKey(g)
			for i := range 200 {
				at := t0.Add(time.Duration(i) * time.Millisecond)
				if _, err := m.Observe(k, announce(k, at, "x"), at); err != nil {
					t.Error(err)
					return
				}
				_ = m.List()
				_ = m.SelfV4()
				m.Expire(at)
			}
		}()
	}
	wg.Wait()
	if m.Len() != 4 {
		t.Fatalf("%d members, want 4", m.Len())
	}
}
