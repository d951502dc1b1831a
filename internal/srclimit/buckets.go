package srclimit

import (
	"time"

	"golang.org/x/time/rate"
)

// Buckets is a bounded table of token buckets, one per key (a source
// address, a prefix, an address and port). It is the one piece every
// per-source limit of plurenet shares: the swarm-mode datagram limits
// (Limiter), the relay's handshake rates per address prefix and the DNS
// resolver's query rates.
//
// The table never holds more than its bound. When it is full, the buckets
// that have refilled are forgotten (a new bucket starts full, so forgetting
// a full one changes no future decision), at most once per sweepEvery so
// that a stream of new, possibly spoofed, keys cannot make every lookup
// cost a walk over the table. When it is still full, new keys share one
// overflow bucket: they are still limited, only not one by one, and the
// buckets of the keys already known, which earned their entries, are kept.
//
// A Buckets is not safe for concurrent use: its owner holds a lock.
type Buckets[K comparable] struct {
	rate     rate.Limit
	burst    int
	max      int
	entries  map[K]*bucket
	overflow *rate.Limiter

	lastSweep time.Time
}

// bucket is one key's token bucket and how long it is kept even when
// full.
type bucket struct {
	lim  *rate.Limiter
	keep time.Time // zero: only while not full
}

// NewBuckets returns a table of at most maxKeys buckets of rate r and
// burst. A maxKeys below 1 is taken as 1.
func NewBuckets[K comparable](r rate.Limit, burst, maxKeys int) *Buckets[K] {
	return &Buckets[K]{
		rate:     r,
		burst:    burst,
		max:      max(maxKeys, 1),
		entries:  make(map[K]*bucket),
		overflow: rate.NewLimiter(r, burst),
	}
}

// Get returns key's bucket, adding one, or the shared overflow bucket when
// the table is full of buckets still in use.
func (b *Buckets[K]) Get(key K, now time.Time) *rate.Limiter {
	if e := b.entries[key]; e != nil {
		return e.lim
	}
	if e := b.add(key, now); e != nil {
		return e.lim
	}
	return b.overflow
}

// Lookup returns key's bucket if it has one.
func (b *Buckets[K]) Lookup(key K) (lim *rate.Limiter, keep time.Time, ok bool) {
	e := b.entries[key]
	if e == nil {
		return nil, time.Time{}, false
	}
	return e.lim, e.keep, true
}

// Keep gives key a bucket (if the table has room) that is kept until at
// least until, full or not: a source vouched for stays known for that
// long.
func (b *Buckets[K]) Keep(key K, until, now time.Time) {
	e := b.entries[key]
	if e == nil {
		if e = b.add(key, now); e == nil {
			return
		}
	}
	e.keep = until
}

// Len returns how many keys have a bucket of their own.
func (b *Buckets[K]) Len() int { return len(b.entries) }

// add makes a bucket for key, or returns nil when the table stays full.
func (b *Buckets[K]) add(key K, now time.Time) *bucket {
	if len(b.entries) >= b.max {
		b.sweep(now)
		if len(b.entries) >= b.max {
			return nil
		}
	}
	e := &bucket{lim: rate.NewLimiter(b.rate, b.burst)}
	b.entries[key] = e
	return e
}

// sweep forgets the buckets that have refilled and are not kept.
func (b *Buckets[K]) sweep(now time.Time) {
	if now.Sub(b.lastSweep) < sweepEvery {
		return
	}
	b.lastSweep = now
	for k, e := range b.entries {
		if !now.Before(e.keep) && e.lim.TokensAt(now) >= float64(b.burst) {
			delete(b.entries, k)
		}
	}
}
