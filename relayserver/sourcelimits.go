package relayserver

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Per-source-address limits: how many connections one address holds and how
// fast it may open new ones. They are checked before the WebSocket upgrade,
// so a refused attempt costs the relay no key work and no goroutine.

const (
	// maxRateEntries bounds the handshake-rate table. An entry is a few
	// hundred bytes; 64 Ki addresses cost about 16 MiB. When the table is
	// full, entries whose bucket has refilled (idle addresses) are swept,
	// and if that is not enough an arbitrary entry goes: an attacker with
	// more addresses than this gets past per-address limits anyway.
	maxRateEntries = 64 << 10
	// sweepEvery spaces the sweeps of a full table, so a stream of new
	// addresses costs one O(n) pass per interval, not one per attempt.
	sweepEvery = time.Second
	// ipv6Bits is the prefix an IPv6 client is counted by: a host or home
	// usually holds a whole /64 and can pick any address in it.
	ipv6Bits = 64
)

// sourceLimits tracks connections and handshake buckets per source.
type sourceLimits struct {
	maxConns  int        // per source; <= 0: unlimited
	rate      rate.Limit // per source; <= 0: unlimited
	burst     int
	trustXFF  bool
	mu        sync.Mutex
	conns     map[netip.Prefix]int // only sources with a connection open
	buckets   map[netip.Prefix]*rate.Limiter
	lastSweep time.Time
}

func newSourceLimits(cfg Config) *sourceLimits {
	return &sourceLimits{
		maxConns: cfg.MaxConnsPerIP,
		rate:     rate.Limit(cfg.HandshakeRatePerIP),
		burst:    cfg.HandshakeBurstPerIP,
		trustXFF: cfg.TrustProxyHeaders,
		conns:    make(map[netip.Prefix]int),
		buckets:  make(map[netip.Prefix]*rate.Limiter),
	}
}

// source returns the address r counts against: the TCP peer, or with
// TrustProxyHeaders the last X-Forwarded-For entry (the one our proxy
// appended; earlier entries are whatever the client sent). ok is false when
// no address can be found, which only a misconfigured proxy causes.
func (l *sourceLimits) source(r *http.Request) (netip.Prefix, bool) {
	var addr netip.Addr
	if l.trustXFF {
		if hs := r.Header.Values("X-Forwarded-For"); len(hs) > 0 {
			last := hs[len(hs)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			if a, err := netip.ParseAddr(strings.TrimSpace(last)); err == nil {
				addr = a
			}
		}
	}
	if !addr.IsValid() {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		a, err := netip.ParseAddr(host)
		if err != nil {
			return netip.Prefix{}, false
		}
		addr = a
	}
	addr = addr.Unmap().WithZone("")
	bits := 32
	if addr.Is6() {
		bits = ipv6Bits
	}
	p, _ := addr.Prefix(bits)
	return p, true
}

// allowHandshake takes a token from src's bucket.
func (l *sourceLimits) allowHandshake(src netip.Prefix, now time.Time) bool {
	if l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[src]
	if b == nil {
		if len(l.buckets) >= maxRateEntries {
			l.evictLocked(now)
		}
		b = rate.NewLimiter(l.rate, l.burst)
		l.buckets[src] = b
	}
	return b.AllowN(now, 1)
}

// evictLocked makes room in a full bucket table.
func (l *sourceLimits) evictLocked(now time.Time) {
	if now.Sub(l.lastSweep) >= sweepEvery {
		l.lastSweep = now
		for k, b := range l.buckets {
			// A full bucket is the state a new entry starts in:
			// forgetting it changes nothing.
			if b.TokensAt(now) >= float64(l.burst) {
				delete(l.buckets, k)
			}
		}
	}
	for k := range l.buckets {
		if len(l.buckets) < maxRateEntries {
			break
		}
		delete(l.buckets, k)
	}
}

// acquire counts a connection from src; it fails at MaxConnsPerIP.
func (l *sourceLimits) acquire(src netip.Prefix) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.conns[src]
	if l.maxConns > 0 && n >= l.maxConns {
		return false
	}
	l.conns[src] = n + 1
	return true
}

// release undoes acquire.
func (l *sourceLimits) release(src netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.conns[src]; n > 1 {
		l.conns[src] = n - 1
	} else {
		delete(l.conns, src)
	}
}

// counts returns the number of sources with connections and of handshake
// buckets, for metrics.
func (l *sourceLimits) counts() (sources, buckets int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns), len(l.buckets)
}
