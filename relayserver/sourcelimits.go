package relayserver

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/plures/plurenet/internal/srclimit"
	"golang.org/x/time/rate"
)

// Per-source-address limits: how many connections one address holds and how
// fast it may open new ones. They are checked before the WebSocket upgrade,
// so a refused attempt costs the relay no key work and no goroutine.
//
// An IPv4 client is one address. An IPv6 client can pick any address of the
// prefixes it holds, so it is counted three times: by its /64 (a host or a
// LAN), its /56 (what an ISP usually delegates to a home) and its /48 (a
// site), each against its own limits. Counting only by /64 let one home
// open 256 times the per-address limit.

// maxRateEntries bounds each handshake-rate table (one per prefix length).
// An entry is a few hundred bytes; 64 Ki addresses cost about 16 MiB. When
// a table is full, the buckets that have refilled (idle addresses) are
// swept, and if that is not enough new addresses share one overflow bucket
// until room frees up (srclimit.Buckets): an attacker with more addresses
// than this gets past per-address limits anyway, and the addresses already
// counted keep their own buckets.
const maxRateEntries = 64 << 10

// A source's prefixes, in the order they are checked.
const (
	levelAddr = iota // IPv4 /32 or IPv6 /64
	level56          // IPv6 /56
	level48          // IPv6 /48
	numLevels
)

// levelBits is the IPv6 prefix length of each level.
var levelBits = [numLevels]int{levelAddr: 64, level56: 56, level48: 48}

// source is the prefixes one client counts against; the /56 and /48 are
// invalid for IPv4.
type source [numLevels]netip.Prefix

// String names the client's address prefix, for logs.
func (s source) String() string { return s[levelAddr].String() }

// prefixLimits are the limits and counts of one prefix length.
type prefixLimits struct {
	name     string     // for refusals: "address", "IPv6 /56", "IPv6 /48"
	maxConns int        // <= 0: unlimited
	rate     rate.Limit // <= 0: unlimited
	burst    int
	conns    map[netip.Prefix]int // only prefixes with a connection open
	buckets  *srclimit.Buckets[netip.Prefix]
}

// sourceLimits tracks connections and handshake buckets per source.
type sourceLimits struct {
	trustXFF bool
	mu       sync.Mutex
	levels   [numLevels]prefixLimits
}

func newSourceLimits(cfg Config) *sourceLimits {
	l := &sourceLimits{trustXFF: cfg.TrustProxyHeaders}
	set := func(lv int, name string, maxConns int, r float64, burst int) {
		l.levels[lv] = prefixLimits{
			name: name, maxConns: maxConns, rate: rate.Limit(r), burst: burst,
			conns: make(map[netip.Prefix]int), buckets: srclimit.NewBuckets[netip.Prefix](rate.Limit(r), burst, maxRateEntries),
		}
	}
	set(levelAddr, "address", cfg.MaxConnsPerIP, cfg.HandshakeRatePerIP, cfg.HandshakeBurstPerIP)
	set(level56, "IPv6 /56", cfg.MaxConnsPer56, cfg.HandshakeRatePer56, cfg.HandshakeBurstPer56)
	set(level48, "IPv6 /48", cfg.MaxConnsPer48, cfg.HandshakeRatePer48, cfg.HandshakeBurstPer48)
	return l
}

// source returns the prefixes r counts against: those of the TCP peer, or
// with TrustProxyHeaders of the last X-Forwarded-For entry (the one our
// proxy appended; earlier entries are whatever the client sent). ok is false
// when no address can be found, which only a misconfigured proxy causes.
func (l *sourceLimits) source(r *http.Request) (source, bool) {
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
			return source{}, false
		}
		addr = a
	}
	return sourceOf(addr), true
}

// sourceOf returns the prefixes addr counts against.
func sourceOf(addr netip.Addr) source {
	addr = addr.Unmap().WithZone("")
	var s source
	if addr.Is4() {
		s[levelAddr], _ = addr.Prefix(32)
		return s
	}
	for lv, bits := range levelBits {
		s[lv], _ = addr.Prefix(bits)
	}
	return s
}

// allowHandshake takes a token from each of src's buckets, or from none:
// an attempt refused by its /48 does not cost its /64 a token.
func (l *sourceLimits) allowHandshake(src source, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	var taken [numLevels]*rate.Reservation
	for lv := range l.levels {
		p := &l.levels[lv]
		if !src[lv].IsValid() || p.rate <= 0 {
			continue
		}
		res := p.buckets.Get(src[lv], now).ReserveN(now, 1)
		if res.OK() && res.DelayFrom(now) == 0 {
			taken[lv] = res
			continue
		}
		res.CancelAt(now)
		for _, t := range taken {
			if t != nil {
				t.CancelAt(now)
			}
		}
		return false
	}
	return true
}

// acquire counts a connection from src. It returns "" when admitted, or
// why not: which of src's prefixes is at its limit.
func (l *sourceLimits) acquire(src source) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for lv := range l.levels {
		p := &l.levels[lv]
		if src[lv].IsValid() && p.maxConns > 0 && p.conns[src[lv]] >= p.maxConns {
			return fmt.Sprintf("your %s already holds %d connections", p.name, p.maxConns)
		}
	}
	for lv := range l.levels {
		if src[lv].IsValid() {
			l.levels[lv].conns[src[lv]]++
		}
	}
	return ""
}

// release undoes acquire.
func (l *sourceLimits) release(src source) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for lv := range l.levels {
		if !src[lv].IsValid() {
			continue
		}
		conns := l.levels[lv].conns
		if n := conns[src[lv]]; n > 1 {
			conns[src[lv]] = n - 1
		} else {
			delete(conns, src[lv])
		}
	}
}

// counts returns the number of addresses (IPv4, or IPv6 /64) with
// connections and of their handshake buckets, for metrics.
func (l *sourceLimits) counts() (sources, buckets int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.levels[levelAddr].conns), l.levels[levelAddr].buckets.Len()
}
