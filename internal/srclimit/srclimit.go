// Package srclimit admits datagrams by their source address before any
// cryptography is spent on them, in a way that favours known sources.
//
// Every source has its own token bucket, kept in a bounded table. A known
// source (one the caller vouches for: a member's address) has a larger
// bucket and nothing else, so traffic from other sources can never take
// its share. Unknown sources are counted by IP (one host cannot multiply
// its budget with ports, nor, over IPv6, with the addresses of its /64)
// and also share one overall bucket, so that a
// flood from many (spoofed) sources takes at most that share of the
// receiver's work, and never a known source's.
//
// Spoofing a known source's exact address spends that source's own
// budget, which is as far as any limit by address can go.
package srclimit

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// sweepEvery bounds how often a full table is swept for idle entries, so
// that a stream of new (spoofed) sources cannot make every datagram cost a
// walk over the whole table.
const sweepEvery = time.Second

// Config sets the buckets. The rates and MaxSources must be positive: New
// panics otherwise, as that is a bug in the caller's constants.
type Config struct {
	// KnownRate and KnownBurst are each known source's bucket.
	KnownRate  rate.Limit
	KnownBurst int
	// Rate and Burst are each unknown source IP's bucket.
	Rate  rate.Limit
	Burst int
	// TotalRate and TotalBurst are shared by all unknown sources.
	TotalRate  rate.Limit
	TotalBurst int
	// MaxSources bounds each table (known, unknown).
	MaxSources int
	// VouchFor is how long Vouch makes a source known.
	VouchFor time.Duration
}

// Limiter admits datagrams by source. It is safe for concurrent use.
type Limiter struct {
	cfg Config

	mu        sync.Mutex
	known     map[netip.AddrPort]*knownEntry
	unknown   map[netip.Addr]*rate.Limiter
	lastSweep time.Time
	total     *rate.Limiter
	// The overflow buckets serve new sources that arrive while a table is
	// full of busy ones: they are still limited, only not one by one.
	knownOverflow, unknownOverflow *rate.Limiter
}

type knownEntry struct {
	lim   *rate.Limiter
	until time.Time // vouched for until then; zero if never vouched
}

// New returns a Limiter with cfg's buckets.
func New(cfg Config) *Limiter {
	if cfg.KnownRate <= 0 || cfg.Rate <= 0 || cfg.TotalRate <= 0 || cfg.MaxSources <= 0 {
		panic("srclimit: zero rate or table size")
	}
	return &Limiter{
		cfg:             cfg,
		known:           make(map[netip.AddrPort]*knownEntry),
		unknown:         make(map[netip.Addr]*rate.Limiter),
		total:           rate.NewLimiter(cfg.TotalRate, cfg.TotalBurst),
		knownOverflow:   rate.NewLimiter(cfg.KnownRate, cfg.KnownBurst),
		unknownOverflow: rate.NewLimiter(cfg.Rate, cfg.Burst),
	}
}

// Allow reports whether one datagram from src may pass at now. known says
// the caller knows src as a member's address; a source vouched for within
// VouchFor is known too.
func (l *Limiter) Allow(src netip.AddrPort, known bool, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.known[src]
	if e != nil && (known || now.Before(e.until)) {
		return e.lim.AllowN(now, 1)
	}
	if known {
		return l.knownEntry(src, now).AllowN(now, 1)
	}
	ip := sourceIP(src.Addr())
	u := l.unknown[ip]
	if u == nil {
		if len(l.unknown) >= l.cfg.MaxSources {
			l.sweep(now)
		}
		if len(l.unknown) >= l.cfg.MaxSources {
			u = l.unknownOverflow
		} else {
			u = rate.NewLimiter(l.cfg.Rate, l.cfg.Burst)
			l.unknown[ip] = u
		}
	}
	// The source's own bucket first: a single busy source then spends only
	// its own share of the total, and leaves the rest to other newcomers.
	return u.AllowN(now, 1) && l.total.AllowN(now, 1)
}

// Vouch makes src a known source until now + VouchFor: the caller
// authenticated a message from it.
func (l *Limiter) Vouch(src netip.AddrPort, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.known[src]; e != nil {
		e.until = now.Add(l.cfg.VouchFor)
		return
	}
	if len(l.known) >= l.cfg.MaxSources {
		l.sweep(now)
	}
	if len(l.known) < l.cfg.MaxSources {
		l.known[src] = &knownEntry{lim: rate.NewLimiter(l.cfg.KnownRate, l.cfg.KnownBurst), until: now.Add(l.cfg.VouchFor)}
	}
}

// knownEntry returns src's bucket as a known source, adding one.
func (l *Limiter) knownEntry(src netip.AddrPort, now time.Time) *rate.Limiter {
	if len(l.known) >= l.cfg.MaxSources {
		l.sweep(now)
	}
	if len(l.known) >= l.cfg.MaxSources {
		return l.knownOverflow
	}
	e := &knownEntry{lim: rate.NewLimiter(l.cfg.KnownRate, l.cfg.KnownBurst)}
	l.known[src] = e
	return e.lim
}

// sweep forgets entries whose bucket has refilled (and, for vouched
// sources, whose vouching has lapsed): a new bucket starts full, so
// forgetting a full one changes no future decision.
func (l *Limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < sweepEvery {
		return
	}
	l.lastSweep = now
	for src, e := range l.known {
		if !now.Before(e.until) && e.lim.TokensAt(now) >= float64(l.cfg.KnownBurst) {
			delete(l.known, src)
		}
	}
	for ip, u := range l.unknown {
		if u.TokensAt(now) >= float64(l.cfg.Burst) {
			delete(l.unknown, ip)
		}
	}
}

// Sources returns how many known and unknown sources have their own
// bucket.
func (l *Limiter) Sources() (known, unknown int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.known), len(l.unknown)
}

// sourceIP is what an unknown source is counted by: its IPv4 address, or
// the /64 of its IPv6 address, since one IPv6 host (one home, one cloud
// machine) usually has a whole /64 to send from.
func sourceIP(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.WithZone("").Prefix(64)
		return p.Addr()
	}
	return a
}
