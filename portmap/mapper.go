package portmap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Timing. Every exchange with the gateway is bounded, so Close returns
// within closeTimeout plus one exchange.
const (
	// DefaultLifetime is the lease asked for: RFC 6886's recommendation.
	// The mapping is renewed at half its lifetime, so a crashed node's
	// mapping lapses within this time.
	DefaultLifetime = 2 * time.Hour
	// minLifetime bounds Config.Lifetime from below: shorter leases would
	// have us renewing more than we use.
	minLifetime = 2 * time.Second

	// exchangeTimeout bounds one request to the gateway with its retries
	// (and UPnP's SSDP search, description and SOAP action, each): the
	// gateway is one hop away and answers in milliseconds.
	exchangeTimeout = 2 * time.Second
	// closeTimeout bounds removing the mapping on Close.
	closeTimeout = 2 * time.Second

	// minRenew and maxRenew bound the renewal interval, whatever lifetime
	// the gateway grants: a gateway granting a second must not make us
	// send every 500 ms, and one granting a year must still be asked
	// again now and then, which is how a reboot that lost the mapping, or
	// a new external address, is noticed.
	minRenew = time.Second
	maxRenew = 30 * time.Minute
	// renewRetry is the wait after a failed renewal; the mapping is kept
	// until its lifetime ends.
	renewRetry = 5 * time.Second

	// searchRetryMin and searchRetryMax bound the wait before looking for
	// a port mapping protocol again after none answered: a gateway rarely
	// gains one, so the search backs off to a packet or two per half hour.
	searchRetryMin = time.Minute
	searchRetryMax = 30 * time.Minute
)

// Config configures a Mapper. Port is required; the zero value of the rest
// is usable.
type Config struct {
	// Port is the UDP port to map: the node's one UDP socket's.
	Port uint16
	// Local is the address the socket is bound to; the zero value (or the
	// unspecified address) means every address. A socket bound to another
	// address than the one facing the gateway cannot be mapped, and one
	// bound to loopback is never asked for.
	Local netip.Addr
	// Gateway is the router to ask; the zero value means the IPv4 default
	// route's gateway.
	Gateway netip.Addr
	// Protocols are the protocols to try, in order of preference; nil
	// means Protocols (every one).
	Protocols []Protocol
	// Lifetime is the lease asked for; zero means DefaultLifetime. The
	// gateway may grant less.
	Lifetime time.Duration
	// OnChange, if set, is called whenever the mapping appears, changes
	// address or goes (with the zero Mapping), from the Mapper's goroutine;
	// it must not block for long.
	OnChange func(Mapping)
	Logger   *slog.Logger

	hooks testHooks
}

func (cfg Config) withDefaults() (Config, error) {
	if cfg.Protocols == nil {
		cfg.Protocols = slices.Clone(Protocols)
	}
	seen := map[Protocol]bool{}
	for _, p := range cfg.Protocols {
		switch p {
		case UPnP, NATPMP, PCP:
		default:
			return cfg, fmt.Errorf("portmap: protocol %q: want %q, %q or %q", p, UPnP, NATPMP, PCP)
		}
		if seen[p] {
			return cfg, fmt.Errorf("portmap: protocol %q listed twice", p)
		}
		seen[p] = true
	}
	if cfg.Lifetime == 0 {
		cfg.Lifetime = DefaultLifetime
	}
	if cfg.Lifetime < minLifetime {
		return cfg, fmt.Errorf("portmap: lifetime %v: want at least %v", cfg.Lifetime, minLifetime)
	}
	if cfg.Gateway.IsValid() && !cfg.Gateway.Unmap().Is4() {
		return cfg, fmt.Errorf("portmap: gateway %s: only IPv4 is mapped", cfg.Gateway)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, nil
}

// Mapper keeps a UDP port mapped on the gateway: it looks for a protocol
// the gateway speaks, maps the port, renews the mapping, looks again when
// it is lost, and removes it on Close.
type Mapper struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	current Mapping

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// New starts keeping cfg.Port mapped, in the background.
func New(cfg Config) (*Mapper, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.Port == 0 {
		return nil, errors.New("portmap: no port to map")
	}
	if cfg.Local.IsLoopback() {
		return nil, fmt.Errorf("portmap: the socket is bound to %s: no gateway can forward to loopback", cfg.Local)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mapper{cfg: cfg, log: cfg.Logger, cancel: cancel, done: make(chan struct{})}
	go m.run(ctx)
	return m, nil
}

// Mapping returns the current mapping; ok is false while there is none.
func (m *Mapper) Mapping() (Mapping, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.current, m.current.IsValid()
}

// Close removes the mapping from the gateway (waiting at most closeTimeout
// for it to answer) and stops the Mapper. It is idempotent.
func (m *Mapper) Close() error {
	m.closeOnce.Do(func() {
		m.cancel()
		<-m.done
	})
	return nil
}

func (m *Mapper) set(mp Mapping) {
	m.mu.Lock()
	old := m.current
	m.current = mp
	m.mu.Unlock()
	if old.External == mp.External && old.Protocol == mp.Protocol {
		return
	}
	switch {
	case mp.IsValid():
		m.log.Info("port mapping: UDP port reachable from outside", "external", mp.External.String(),
			"internal", mp.Internal.String(), "protocol", string(mp.Protocol), "lifetime", mp.Lifetime)
		if mp.External.Addr().IsPrivate() {
			m.log.Info("port mapping: the gateway's external address is private: it is behind another NAT, and only members inside that network can use the mapping",
				"external", mp.External.String())
		}
	default:
		m.log.Info("port mapping: lost", "was", old.String())
	}
	if m.cfg.OnChange != nil {
		m.cfg.OnChange(mp)
	}
}

// run is the Mapper's goroutine: search, map, renew; on the way out,
// remove.
func (m *Mapper) run(ctx context.Context) {
	defer close(m.done)
	wait := searchRetryMin
	logged := false
	for {
		c, mp, err := m.establish(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			level := slog.LevelDebug
			if !logged {
				level, logged = slog.LevelInfo, true
			}
			m.log.Log(ctx, level, "port mapping: none", "why", err.Error(), "retry", wait)
			if !sleep(ctx, wait) {
				return
			}
			wait = min(2*wait, searchRetryMax)
			continue
		}
		wait, logged = searchRetryMin, false
		m.set(mp)
		mp = m.keep(ctx, c, mp)
		if ctx.Err() != nil {
			if mp.IsValid() {
				m.remove(c, mp)
			}
			return
		}
		m.set(Mapping{})
	}
}

// establish finds the gateway, asks every configured protocol at once
// whether the gateway speaks it, and maps the port with the most preferred
// one that answered (the next if that fails).
func (m *Mapper) establish(ctx context.Context) (client, Mapping, error) {
	gw, err := m.gateway()
	if err != nil {
		return nil, Mapping{}, err
	}
	if l := m.cfg.Local; l.IsValid() && !l.IsUnspecified() && l.Unmap() != gw.Self {
		return nil, Mapping{}, fmt.Errorf("the socket is bound to %s, but the gateway %s is reached from %s", l, gw.Addr, gw.Self)
	}
	results, clients := probeAll(ctx, gw, m.cfg.Protocols, m.cfg.hooks)
	var errs []error
	for i, r := range results {
		if r.Err != nil {
			errs = append(errs, r.Err)
			continue
		}
		ectx, cancel := context.WithTimeout(ctx, exchangeTimeout)
		mp, err := clients[i].add(ectx, m.cfg.Port, Mapping{}, m.cfg.Lifetime)
		cancel()
		if err == nil {
			return clients[i], mp, nil
		}
		errs = append(errs, err)
	}
	return nil, Mapping{}, fmt.Errorf("gateway %s: %w", gw.Addr, errors.Join(errs...))
}

func (m *Mapper) gateway() (Gateway, error) {
	if m.cfg.Gateway.IsValid() {
		return gatewayFrom(m.cfg.Gateway)
	}
	return FindGateway()
}

// keep renews mp until it is lost (it returns the zero Mapping) or ctx ends
// (it returns the mapping to remove).
func (m *Mapper) keep(ctx context.Context, c client, mp Mapping) Mapping {
	for {
		if !sleep(ctx, renewAfter(mp)) {
			return mp
		}
		for {
			ectx, cancel := context.WithTimeout(ctx, exchangeTimeout)
			next, err := c.add(ectx, m.cfg.Port, mp, m.cfg.Lifetime)
			cancel()
			if ctx.Err() != nil {
				return mp
			}
			if err == nil {
				mp = next
				m.set(mp)
				break
			}
			expired := time.Since(mp.Obtained) >= validFor(mp)
			m.log.Debug("port mapping: renewal failed", "err", err.Error(), "expired", expired)
			if expired {
				return Mapping{}
			}
			if !sleep(ctx, renewRetry) {
				return mp
			}
		}
	}
}

// renewAfter is how long after it was obtained mp is renewed: at half its
// lifetime (RFC 6886 section 3.3; RFC 6887 section 11.2.1 says between
// half and 5/8), within [minRenew, maxRenew].
func renewAfter(mp Mapping) time.Duration {
	d := maxRenew
	if mp.Lifetime > 0 {
		d = min(mp.Lifetime/2, maxRenew)
	}
	return max(d-time.Since(mp.Obtained), minRenew)
}

// validFor is how long mp counts as mapped without a successful renewal:
// its lifetime, or for a lease without expiry twice maxRenew (the gateway
// may have rebooted and lost it; a few failed renewals say so).
func validFor(mp Mapping) time.Duration {
	if mp.Lifetime > 0 {
		return mp.Lifetime
	}
	return 2 * maxRenew
}

// remove deletes mp from the gateway on the way out, bounded by
// closeTimeout; the Mapper stops offering it either way.
func (m *Mapper) remove(c client, mp Mapping) {
	m.mu.Lock()
	m.current = Mapping{}
	m.mu.Unlock()
	if m.cfg.OnChange != nil {
		m.cfg.OnChange(Mapping{})
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if err := c.remove(ctx, mp); err != nil {
		m.log.Info("port mapping: not removed; it lapses with its lease", "external", mp.External.String(), "err", err.Error())
		return
	}
	m.log.Info("port mapping: removed", "external", mp.External.String(), "protocol", string(mp.Protocol))
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
