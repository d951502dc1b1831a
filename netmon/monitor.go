package netmon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// Reason says what kind of change an Event reports.
type Reason string

const (
	// ReasonNetwork: the usable addresses or default routes changed.
	ReasonNetwork Reason = "network"
	// ReasonResume: the wall clock jumped ahead of the monotonic clock,
	// which is what a suspend and resume looks like; NAT mappings and
	// peers' views of this host are likely stale even if no address changed.
	ReasonResume Reason = "resume"
)

// Event is one debounced change.
type Event struct {
	Reason Reason
	// Before and After are the snapshots around a network change
	// (After only is meaningful for a resume).
	Before, After Snapshot
	// Slept is how far the wall clock ran ahead of the monotonic one
	// (ReasonResume only).
	Slept time.Duration
}

// Defaults for Config's zero values.
const (
	// DefaultDebounce: a DHCP lease adds the address, then the route, a
	// few milliseconds apart; a Wi-Fi roam may take a few hundred. Waiting
	// this long for quiet makes one Event of it while adding little to the
	// time a move takes to heal.
	DefaultDebounce = 250 * time.Millisecond
	// DefaultPollInterval is how often the interface list is polled where
	// there are no notifications: a move is noticed within it.
	DefaultPollInterval = 2 * time.Second
	// backstopInterval is a slow poll next to the notifications, in case
	// one was lost (a netlink socket overflowed).
	backstopInterval = 30 * time.Second
	// DefaultJumpThreshold is how far the wall clock may run ahead of the
	// monotonic clock before it counts as a resume. Above the scheduling
	// noise of a loaded host and small NTP steps; at about the direct
	// path's loss timeout, beyond which paths are stale anyway.
	DefaultJumpThreshold = 3 * time.Second
	// clockCheck is how often the two clocks are compared.
	clockCheck = time.Second
	// maxDebounceHold bounds how long a stream of notifications can delay
	// an Event: a flapping interface still produces one every so often.
	maxDebounceHold = 2 * time.Second
)

// Config configures a Monitor; OnChange is required, the rest has usable
// zero values.
type Config struct {
	// OnChange receives each Event, from the Monitor's goroutine, one at a
	// time. It should return quickly: changes arriving meanwhile are
	// coalesced, not queued.
	OnChange func(Event)
	// Exclude are prefixes whose addresses are ignored: the mesh's own
	// overlay addresses, which a kernel TUN puts on a local interface.
	Exclude []netip.Prefix
	// Debounce, PollInterval and JumpThreshold default to the constants
	// above.
	Debounce      time.Duration
	PollInterval  time.Duration
	JumpThreshold time.Duration
	Logger        *slog.Logger

	// Test hooks: the snapshot source, the clocks, and the notification
	// source (nil means the platform's).
	snapshot func(exclude []netip.Prefix) (Snapshot, error)
	clock    func() (wall time.Time, mono time.Duration)
	notify   func(ctx context.Context, wake func()) bool
}

func (cfg Config) withDefaults() (Config, error) {
	if cfg.OnChange == nil {
		return cfg, errors.New("netmon: no OnChange func")
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = DefaultDebounce
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.JumpThreshold <= 0 {
		cfg.JumpThreshold = DefaultJumpThreshold
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.clock == nil {
		epoch := time.Now()
		cfg.clock = func() (time.Time, time.Duration) {
			now := time.Now()
			// Round(0) strips the monotonic reading, so the wall
			// difference is the wall clock's; Sub on the originals is
			// the monotonic one.
			return now.Round(0), now.Sub(epoch)
		}
	}
	return cfg, nil
}

// Monitor watches the network until Close.
type Monitor struct {
	cfg       Config
	release   func() // frees the platform's source (a namespace handle)
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Start takes the first snapshot and starts watching the network
// namespace of the calling thread (on Linux; a program that moves threads
// between namespaces calls it from the locked thread of the namespace to
// watch). It fails only on a bad Config or if the interfaces cannot be
// listed at all.
func Start(ctx context.Context, cfg Config) (*Monitor, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	release := func() {}
	if cfg.snapshot == nil || cfg.notify == nil {
		src, err := newSource()
		if err != nil {
			return nil, err
		}
		if cfg.snapshot == nil {
			cfg.snapshot = src.take
		}
		if cfg.notify == nil {
			cfg.notify = src.subscribe
		}
		release = src.close
	}
	first, err := cfg.snapshot(cfg.Exclude)
	if err != nil {
		release()
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	m := &Monitor{cfg: cfg, cancel: cancel, release: release}
	wake := make(chan struct{}, 1)
	poke := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		m.run(ctx, first, wake)
	}()
	go func() {
		defer m.wg.Done()
		m.notifications(ctx, poke)
	}()
	return m, nil
}

// Close stops watching and waits for the Monitor's goroutines. It is
// idempotent.
func (m *Monitor) Close() error {
	m.closeOnce.Do(func() {
		m.cancel()
		m.wg.Wait()
		m.release()
	})
	return nil
}

// notifications feeds wake from the platform's notifications while they
// work, and from a poll when they do not (or no longer) work.
func (m *Monitor) notifications(ctx context.Context, wake func()) {
	if m.cfg.notify(ctx, wake) || ctx.Err() != nil {
		return
	}
	m.cfg.Logger.Debug("netmon: no change notifications; polling", "every", m.cfg.PollInterval)
	t := time.NewTicker(m.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			wake()
		}
	}
}

// run owns the last snapshot: it debounces wakes into comparisons and
// watches the clocks.
func (m *Monitor) run(ctx context.Context, last Snapshot, wake <-chan struct{}) {
	clock := time.NewTicker(clockCheck)
	defer clock.Stop()
	backstop := time.NewTicker(backstopInterval)
	defer backstop.Stop()
	prevWall, prevMono := m.cfg.clock()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	var pendingSince time.Time // zero: no comparison pending
	compare := func(ev Event) {
		next, err := m.cfg.snapshot(m.cfg.Exclude)
		if err != nil {
			m.cfg.Logger.Warn("netmon: listing interfaces", "err", err)
			return
		}
		if ev.Reason == ReasonNetwork && next.Equal(last) {
			return
		}
		ev.Before, ev.After = last, next
		last = next
		m.cfg.OnChange(ev)
	}
	for {
		select {
		case <-ctx.Done():
			debounce.Stop()
			return
		case <-backstop.C:
			if pendingSince.IsZero() {
				compare(Event{Reason: ReasonNetwork})
			}
		case <-wake:
			now := time.Now()
			if pendingSince.IsZero() {
				pendingSince = now
			}
			// Wait for quiet, but not forever.
			d := min(m.cfg.Debounce, max(0, maxDebounceHold-now.Sub(pendingSince)))
			debounce.Reset(d)
		case <-debounce.C:
			pendingSince = time.Time{}
			compare(Event{Reason: ReasonNetwork})
		case <-clock.C:
			wall, mono := m.cfg.clock()
			if slept := wall.Sub(prevWall) - (mono - prevMono); slept > m.cfg.JumpThreshold {
				m.cfg.Logger.Info("netmon: wall clock jumped ahead; the host probably slept", "slept", slept.Round(time.Millisecond))
				compare(Event{Reason: ReasonResume, Slept: slept})
			}
			prevWall, prevMono = wall, mono
		}
	}
}
