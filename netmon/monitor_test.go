package netmon

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakeNet is a snapshot source and notification source the test drives.
type fakeNet struct {
	mu   sync.Mutex
	cur  Snapshot
	wake chan func()
}

func (f *fakeNet) snapshot([]netip.Prefix) (Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur, nil
}

func (f *fakeNet) set(addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cur = Snapshot{}
	for _, a := range addrs {
		f.cur.Addrs = append(f.cur.Addrs, netip.MustParseAddr(a))
	}
}

func (f *fakeNet) notify(ctx context.Context, wake func()) bool {
	f.wake <- wake
	<-ctx.Done()
	return true
}

func startFake(t *testing.T, clock func() (time.Time, time.Duration)) (*fakeNet, func(), <-chan Event) {
	t.Helper()
	f := &fakeNet{wake: make(chan func(), 1)}
	f.set("10.1.0.2")
	events := make(chan Event, 16)
	m, err := Start(context.Background(), Config{
		OnChange: func(e Event) { events <- e },
		Debounce: 20 * time.Millisecond,
		snapshot: f.snapshot,
		notify:   f.notify,
		clock:    clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return f, <-f.wake, events
}

func TestBurstIsOneEvent(t *testing.T) {
	f, wake, events := startFake(t, nil)
	wake() // nothing changed: no event
	time.Sleep(100 * time.Millisecond)
	f.set("10.2.0.7")
	for range 5 {
		wake()
	}
	f.set("10.2.0.7", "192.168.1.4")
	wake()
	e := <-events
	if e.Reason != ReasonNetwork || len(e.Before.Addrs) != 1 || len(e.After.Addrs) != 2 {
		t.Fatalf("event %+v; want network 10.1.0.2 -> 10.2.0.7 192.168.1.4", e)
	}
	time.Sleep(100 * time.Millisecond)
	select {
	case e := <-events:
		t.Fatalf("a second event %+v for one burst", e)
	default:
	}
}

// TestResumeIsDetected: the wall clock jumps an hour ahead of the
// monotonic one between two looks: a resume event. The jump is made only
// after the monitor's first look (taken when its goroutine starts, which a
// busy machine may delay past Start's return): made before it, the jump
// would be part of the first reading and nothing would ever be detected.
func TestResumeIsDetected(t *testing.T) {
	var mu sync.Mutex
	wall, mono := time.Unix(1e9, 0), time.Duration(0)
	looked := make(chan struct{})
	looks := 0
	clock := func() (time.Time, time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		// Each look: one second on both clocks.
		wall, mono = wall.Add(time.Second), mono+time.Second
		if looks++; looks == 1 {
			close(looked)
		}
		return wall, mono
	}
	_, _, events := startFake(t, clock)
	<-looked
	mu.Lock()
	wall = wall.Add(time.Hour) // slept an hour: the monotonic clock stood still
	mu.Unlock()
	select {
	case e := <-events:
		if e.Reason != ReasonResume || e.Slept < time.Hour {
			t.Fatalf("event %+v; want a resume after an hour", e)
		}
	case <-time.After(time.Minute):
		t.Fatal("no event a minute after the wall clock jumped an hour")
	}
}

func TestConfigAndClose(t *testing.T) {
	if _, err := Start(context.Background(), Config{}); err == nil {
		t.Fatal("Start without OnChange: no error")
	}
	m, err := Start(context.Background(), Config{OnChange: func(Event) {}})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	m.Close()
}

func TestTakeExcludes(t *testing.T) {
	src, err := newSource()
	if err != nil {
		t.Fatal(err)
	}
	defer src.close()
	s, err := src.take(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range s.Addrs {
		if a.IsLoopback() || a.IsLinkLocalUnicast() {
			t.Errorf("snapshot holds %s", a)
		}
	}
	if len(s.Addrs) == 0 {
		t.Skip("no usable address on this host")
	}
	all := make([]netip.Prefix, 0, len(s.Addrs))
	for _, a := range s.Addrs {
		all = append(all, netip.PrefixFrom(a, a.BitLen()))
	}
	if s2, _ := src.take(all); len(s2.Addrs) != 0 {
		t.Errorf("excluding every address left %v", s2.Addrs)
	}
}
