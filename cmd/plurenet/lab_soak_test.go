//go:build linux

package main

// The soak (`make soak`, docs/operations.md "Soak"): three members behind
// NAT routers with continuous verified transfers between every pair while
// the relay drains, UDP is cut, the routers forget their NAT state and
// members restart, on a schedule. It runs only when PLURENET_SOAK names a
// duration; plain `go test` skips it.

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/netlab"
)

// soakEnv names the environment variable that holds the soak's duration.
const soakEnv = "PLURENET_SOAK"

const (
	// soakOverhead is what the soak needs beyond its duration: starting
	// the lab, going direct, and letting the last connections finish.
	soakOverhead = 5*time.Minute + soakStallLimit
	// soakCutFor is how long a UDP cut lasts: long enough for the fallback
	// to the relay (about 3 s) and a good stretch of traffic on it.
	soakCutFor = 20 * time.Second
	// soakCutGrace and soakRestartGrace extend the windows in which a
	// member's direct -> relay move is expected: the poll that sees a
	// move comes up to soakPoll after it, and a restarted member's peers
	// settle on a path in the first seconds after it is back.
	soakCutGrace     = 5 * time.Second
	soakRestartGrace = 30 * time.Second
	// soakPoll is how often each member's status is read for its paths.
	soakPoll = time.Second
	// soakReportEvery is how often the soak logs its running totals.
	soakReportEvery = time.Minute
	// soakRelayExit bounds a drained relay's exit (its grace is 5 s).
	soakRelayExit = 30 * time.Second
)

type soakKind int

const (
	soakDrain soakKind = iota
	soakCutUDP
	soakRestoreUDP
	soakFlush
	soakRestart
)

// soakSchedule is issue 14's: the relay drains every 30 s, UDP is cut
// (for soakCutFor) every 2 min, the NAT routers' conntrack is flushed
// every 5 min and one member restarts every 10 min. The first of each
// comes early and apart from the others, so that a 5-minute run sees
// every kind once and the kinds rarely coincide.
var soakSchedule = []struct {
	kind         soakKind
	first, every time.Duration
}{
	{soakDrain, 15 * time.Second, 30 * time.Second},
	{soakCutUDP, 60 * time.Second, 2 * time.Minute},
	{soakFlush, 150 * time.Second, 5 * time.Minute},
	{soakRestart, 210 * time.Second, 10 * time.Minute},
}

type soakEvent struct {
	at   time.Duration
	kind soakKind
	n    int // which occurrence of its kind: picks the router or member
}

// soakEvents lists the events of a run of duration d in time order. A UDP
// cut is scheduled only when its restore also falls within d.
func soakEvents(d time.Duration) []soakEvent {
	var evs []soakEvent
	for _, s := range soakSchedule {
		for n, at := 0, s.first; at < d; n, at = n+1, at+s.every {
			if s.kind == soakCutUDP {
				if at+soakCutFor >= d {
					break
				}
				evs = append(evs, soakEvent{at + soakCutFor, soakRestoreUDP, n})
			}
			evs = append(evs, soakEvent{at, s.kind, n})
		}
	}
	slices.SortStableFunc(evs, func(a, b soakEvent) int { return cmp.Compare(a.at, b.at) })
	return evs
}

func TestSoakEvents(t *testing.T) {
	count := func(evs []soakEvent) map[soakKind]int {
		c := map[soakKind]int{}
		for _, e := range evs {
			c[e.kind]++
		}
		return c
	}
	tests := []struct {
		d    time.Duration
		want map[soakKind]int
	}{
		{5 * time.Minute, map[soakKind]int{soakDrain: 10, soakCutUDP: 2, soakRestoreUDP: 2, soakFlush: 1, soakRestart: 1}},
		{time.Hour, map[soakKind]int{soakDrain: 120, soakCutUDP: 30, soakRestoreUDP: 30, soakFlush: 12, soakRestart: 6}},
	}
	for _, tt := range tests {
		evs := soakEvents(tt.d)
		if got := count(evs); !maps.Equal(got, tt.want) {
			t.Errorf("soakEvents(%v): %v, want %v", tt.d, got, tt.want)
		}
		if !slices.IsSortedFunc(evs, func(a, b soakEvent) int { return cmp.Compare(a.at, b.at) }) {
			t.Errorf("soakEvents(%v) not in time order", tt.d)
		}
	}
}

// soakWindow is a stretch of time in which a member's direct paths are
// expected to fail: its router cut UDP, or it was restarted.
type soakWindow struct {
	member   string
	from, to time.Time
}

// soakMove is a path change one member saw for another between two polls.
type soakMove struct {
	prev, at       time.Time // the poll before, and the poll that saw it
	observer, peer string
	from, to       string
}

// soakPaths polls every member's status and records the path changes.
type soakPaths struct {
	mu    sync.Mutex
	moves []soakMove
}

func (p *soakPaths) poll(ctx context.Context, n *labNode) {
	last := map[string]string{}
	prev := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(soakPoll):
		}
		st, err := n.status()
		now := time.Now()
		if err != nil {
			clear(last) // restarting: its next view starts afresh
			prev = now
			continue
		}
		for _, mem := range st.Members {
			if was := last[mem.Name]; was != "" && mem.Path != "" && was != mem.Path {
				p.mu.Lock()
				p.moves = append(p.moves, soakMove{prev, now, n.name, mem.Name, was, mem.Path})
				p.mu.Unlock()
			}
			if mem.Path != "" {
				last[mem.Name] = mem.Path
			}
		}
		prev = now
	}
}

// TestLabSoak is `make soak`: see the file's comment and docs/operations.md.
func TestLabSoak(t *testing.T) {
	v := os.Getenv(soakEnv)
	if v == "" {
		t.Skipf("soak: set %s to a duration to run it (make soak; make soak SOAK=5m)", soakEnv)
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Minute {
		t.Fatalf("%s=%q: want a duration of at least 1m, like 5m or 1h", soakEnv, v)
	}
	if dl, ok := t.Deadline(); ok && time.Until(dl) < d+soakOverhead {
		t.Fatalf("a %v soak needs go test -timeout of at least %v", d, d+soakOverhead)
	}
	m := newLabMesh(t)
	var nodes []*labNode
	var routers []*netlab.Router
	router := map[string]*netlab.Router{}
	for i, name := range []string{"a", "b", "c"} {
		r := m.lab.NATRouter(fmt.Sprintf("r%d", i+1), netlab.RouterConfig{})
		n := m.startNode(m.lab.Host(name, r), name)
		nodes, routers, router[name] = append(nodes, n), append(routers, r), r
	}
	waitMesh(t, nodes...)
	for _, n := range nodes {
		for _, o := range nodes {
			if o != n {
				waitMember(t, n, o.name, directWait, "a direct path to "+o.name, isDirect)
			}
		}
	}

	began := time.Now()
	logf := func(format string, args ...any) {
		t.Logf("+%v "+format, append([]any{time.Since(began).Round(time.Second)}, args...)...)
	}
	var flows []*soakFlow
	for _, from := range nodes {
		for _, to := range nodes {
			if from == to {
				continue
			}
			f := &soakFlow{name: from.name + "->" + to.name, id: uint32(len(flows) + 1), from: from, to: to,
				port: uint16(9100 + len(flows)), began: began, logf: logf}
			if err := f.listen(); err != nil {
				t.Fatalf("soak flow %s: listening in %s: %v", f.name, to.name, err)
			}
			flows = append(flows, f)
		}
	}

	// The goroutines' owner: every one is stopped and waited for before
	// the lab is torn down, also when the test fails half-way.
	send, stopSend := context.WithCancel(context.Background())
	abort, stopAbort := context.WithCancel(context.Background())
	polling, stopPolling := context.WithCancel(context.Background())
	var running, background sync.WaitGroup
	paths := &soakPaths{}
	for _, f := range flows {
		background.Go(func() { f.acceptLoop(abort) })
		running.Go(func() { f.run(send, abort) })
	}
	for _, n := range nodes {
		background.Go(func() { paths.poll(polling, n) })
	}
	t.Cleanup(func() {
		stopSend()
		stopAbort()
		stopPolling()
		for _, f := range flows {
			f.ln.Close()
		}
		running.Wait()
		background.Wait()
	})

	total := func(get func(*soakFlow) int64) (sum int64) {
		for _, f := range flows {
			sum += get(f)
		}
		return sum
	}
	report := func() {
		logf("moved %s, lost %d, resets %d, timeouts %d, corrupt %d, connections %d (%d cut by restarts)",
			mib(total(func(f *soakFlow) int64 { return f.moved.Load() })), total(func(f *soakFlow) int64 { return f.lost.Load() }),
			total(func(f *soakFlow) int64 { return f.resets.Load() }), total(func(f *soakFlow) int64 { return f.timeouts.Load() }),
			total(func(f *soakFlow) int64 { return f.corrupt.Load() }), total(func(f *soakFlow) int64 { return f.conns.Load() }),
			total(func(f *soakFlow) int64 { return f.cutConns.Load() }))
	}
	nextReport := began.Add(soakReportEvery)
	sleepUntil := func(at time.Time) {
		for {
			next := at
			if nextReport.Before(next) {
				next = nextReport
			}
			time.Sleep(time.Until(next))
			if next.Before(at) {
				report()
				nextReport = nextReport.Add(soakReportEvery)
				continue
			}
			return
		}
	}

	logf("soak of %v: %d flows at %s/s each, %d MiB per connection", d, len(flows), mib(soakRate), soakSegment>>20)
	var windows []soakWindow
	cutSince := map[string]time.Time{}
	counts := map[soakKind]int{}
	for _, ev := range soakEvents(d) {
		sleepUntil(began.Add(ev.at))
		counts[ev.kind]++
		switch ev.kind {
		case soakDrain:
			drainRelay(t, m, logf)
		case soakCutUDP, soakRestoreUDP:
			n := nodes[ev.n%len(nodes)]
			r := router[n.name]
			if ev.kind == soakCutUDP {
				r.BlockUDP()
				cutSince[n.name] = time.Now()
				logf("UDP cut at %s's router", n.name)
			} else {
				r.UnblockUDP()
				windows = append(windows, soakWindow{n.name, cutSince[n.name], time.Now().Add(soakCutGrace)})
				logf("UDP restored at %s's router", n.name)
			}
		case soakFlush:
			var flushed []string
			for _, r := range routers {
				flushed = append(flushed, fmt.Sprintf("%s %d", r.Name(), r.FlushConntrack()))
			}
			logf("conntrack flushed (entries: %s)", strings.Join(flushed, ", "))
		case soakRestart:
			n := nodes[ev.n%len(nodes)]
			from := time.Now()
			for _, f := range flows {
				if f.from == n || f.to == n {
					f.hold()
				}
			}
			stopNode(t, n)
			n.restart()
			waitMesh(t, nodes...)
			listed := time.Since(from)
			for _, f := range flows {
				if f.from == n || f.to == n {
					f.release()
				}
			}
			direct := fmt.Sprintf("not direct with both others within %v more", redirectWait)
			if waitDirect(n, nodes, redirectWait) {
				direct = "direct with both others after " + time.Since(from).Round(time.Millisecond).String()
			}
			windows = append(windows, soakWindow{n.name, from, time.Now().Add(soakRestartGrace)})
			logf("%s restarted: listed by and listing the others after %v, %s",
				n.name, listed.Round(time.Millisecond), direct)
		}
	}
	sleepUntil(began.Add(d))
	logf("time is up: the flows finish their connections")
	stopSend()
	finished := make(chan struct{})
	go func() { running.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(soakStallLimit + soakDialWait):
		logf("connections still open after %v: given up", soakStallLimit+soakDialWait)
		stopAbort()
		<-finished
	}
	stopPolling()
	stopAbort()
	for _, f := range flows {
		f.ln.Close()
	}
	background.Wait()
	report()
	soakSummary(t, d, counts, flows, windows, paths.moves)
}

// drainRelay sends the relay SIGTERM, which drains it (a Drain to every
// client, new connections refused, up to its grace for clients to move),
// waits for it to exit and starts it again at the same address.
func drainRelay(t *testing.T, m *labMesh, logf func(string, ...any)) {
	t.Helper()
	start := time.Now()
	if err := syscall.Kill(m.relay.Pid(), syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM to the relay: %v", err)
	}
	select {
	case <-m.relay.Done():
	case <-time.After(soakRelayExit):
		t.Fatalf("the relay did not exit within %v of SIGTERM:\n%s", soakRelayExit, m.relay.Output())
	}
	if err := m.relay.Wait(); err != nil {
		t.Fatalf("the relay exited with %v after SIGTERM, want 0:\n%s", err, m.relay.Output())
	}
	drained := time.Since(start)
	m.startRelay()
	logf("relay drained in %v and restarted", drained.Round(time.Millisecond))
}

// waitDirect waits up to wait for n and each other node to see a direct
// path between them, and reports whether they did.
func waitDirect(n *labNode, nodes []*labNode, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		ok := true
		for _, o := range nodes {
			if o == n {
				continue
			}
			for _, pair := range [][2]*labNode{{n, o}, {o, n}} {
				st, err := pair[0].status()
				v, found := member(st, pair[1].name)
				ok = ok && err == nil && found && isDirect(v)
			}
		}
		if ok {
			return true
		}
		time.Sleep(labPoll)
	}
	return false
}

// mib formats a byte count in MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
