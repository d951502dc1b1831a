package direct

import (
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// TestSuspectAndSilenced checks the fast-loss rules on a path's
// timestamps: only a path this side sent on after the peer fell silent is
// suspect, and only probes that got nothing at all back cut it.
func TestSuspectAndSilenced(t *testing.T) {
	ms := func(n int) int64 { return int64(time.Duration(n) * time.Millisecond) }
	cases := []struct {
		name                    string
		recv, send, since, now  int64
		wantSuspect, wantSilent bool
	}{
		{name: "idle path, peer quiet", recv: ms(1000), send: ms(900), now: ms(2500)},
		{name: "sending, heard recently", recv: ms(1000), send: ms(1400), now: ms(1400)},
		{name: "sending, peer silent", recv: ms(1000), send: ms(1600), now: ms(1600), wantSuspect: true},
		{name: "probing, not yet given up", recv: ms(1000), send: ms(1800), since: ms(1600), now: ms(2000), wantSuspect: true},
		{name: "probes unanswered", recv: ms(1000), send: ms(2200), since: ms(1600), now: ms(2200), wantSuspect: true, wantSilent: true},
		{name: "peer heard after the first probe", recv: ms(1700), send: ms(2200), since: ms(1600), now: ms(2200), wantSuspect: false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dp := &directPath{}
			dp.lastRecv.Store(c.recv)
			dp.lastSend.Store(c.send)
			dp.probeSince.Store(c.since)
			dp.probeWait.Store(int64(probeWaitMin))
			if got := dp.suspect(c.now); got != c.wantSuspect {
				t.Errorf("suspect = %v, want %v", got, c.wantSuspect)
			}
			if got := dp.silenced(c.now); got != c.wantSilent {
				t.Errorf("silenced = %v, want %v", got, c.wantSilent)
			}
		})
	}
}

// TestFastLossUnderTraffic: a one-way flow (the case with the least to
// hear back: the receiving WireGuard sends nothing) keeps its direct path
// while the path works, because the probes are answered; when the path
// dies the probes go unanswered and cut it (FastLosses) before the slow
// LossTimeout rule would, and the flow carries on over the other
// transport. The time is logged, not asserted: make bench measures it.
func TestFastLossUnderTraffic(t *testing.T) {
	a, b := directPair(t)

	// The flow: a packet every 20 ms from a to b, and b reads them.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		pkt := tuntest.Ping(b.ip, a.ip)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				select {
				case a.tun.Outbound <- pkt:
				default:
				}
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-b.tun.Inbound:
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	// Three loss timeouts of a working path under the flow: probed
	// (the peer's WireGuard is silent) but never cut.
	time.Sleep(3 * LossTimeout)
	st := a.tr.Stats()
	if st.FastLosses != 0 || !a.tr.Reachable(b.key.Public()) {
		t.Fatalf("a working path under a one-way flow was cut: %+v", st)
	}
	t.Logf("working path: %d probes in %v, none unanswered", st.LivenessProbes, 3*LossTimeout)

	took := blackholeUntilUnreachable(t, a, b)
	if st := a.tr.Stats(); st.FastLosses != 1 {
		t.Fatalf("the dead path was not cut by unanswered probes: %+v", st)
	}
	t.Logf("dead path cut %v after the cut (LossTimeout %v)", took.Round(time.Millisecond), LossTimeout)
	waitPath(t, a.bind, b.key.Public(), "mem")
}
