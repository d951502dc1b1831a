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

	mu      sync.Mutex
	known   *Buckets[netip.AddrPort]
	unknown *Buckets[netip.Addr]
	total   *rate.Limiter
}

// New returns a Limiter with cfg's buckets.
func New(cfg Config) *Limiter {
	if cfg.KnownRate <= 0 || cfg.Rate <= 0 || cfg.TotalRate <= 0 || cfg.MaxSources <= 0 {
		panic("srclimit: zero rate or table size")
	}
	return &Limiter{
		cfg:     cfg,
		known:   NewBuckets[netip.AddrPort](cfg.KnownRate, cfg.KnownBurst, cfg.MaxSources),
		unknown: NewBuckets[netip.Addr](cfg.Rate, cfg.Burst, cfg.MaxSources),
		total:   rate.NewLimiter(cfg.TotalRate, cfg.TotalBurst),
	}
}

// Allow reports whether one datagram from src may pass at now. known says
// the caller knows src as a member's address; a source vouched for within
// VouchFor is known too.
func (l *Limiter) Allow(src netip.AddrPort, known bool, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lim, keep, ok := l.known.Lookup(src); ok && (known || now.Before(keep)) {
		return lim.AllowN(now, 1)
	}
	if known {
		return l.known.Get(src, now).AllowN(now, 1)
	}
	// The source's own bucket first: a single busy source then spends only
	// its own share of the total, and leaves the rest to other newcomers.
	return l.unknown.Get(sourceIP(src.Addr()), now).AllowN(now, 1) && l.total.AllowN(now, 1)
}

// Vouch makes src a known source until now + VouchFor: the caller
// authenticated a message from it.
func (l *Limiter) Vouch(src netip.AddrPort, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.known.Keep(src, now.Add(l.cfg.VouchFor), now)
}

// Sources returns how many known and unknown sources have their own
// bucket.
func (l *Limiter) Sources() (known, unknown int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.known.Len(), l.unknown.Len()
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
