package resolver

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/plures/plurenet/internal/srclimit"
	"golang.org/x/time/rate"
)

// Per-source rate limit defaults. A host's stub resolver asks A and AAAA
// per lookup and retries once or twice; 100 queries a second with a burst
// of 200 is far above what programs on one member need, even with the
// short TTL, yet caps what one source can make the node do.
const (
	DefaultRate  rate.Limit = 100
	DefaultBurst int        = 200
)

// DefaultMaxSources bounds the per-source limiter map. Overlay sources are
// WireGuard-authenticated (two addresses per member, at most 1024 members
// by default), so 4096 holds every honest source; the bound matters only
// against spoofed sources.
const DefaultMaxSources = 4096

// loopback is what a zero Config.Allow admits: programs on this host.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// verdict is what admission decides for one query or connection.
type verdict int

const (
	admitted verdict = iota
	deniedSource
	deniedRate
)

// admission decides which sources are answered: those inside allow, each
// within its own token bucket (in a bounded table: srclimit.Buckets).
type admission struct {
	allow []netip.Prefix

	mu      sync.Mutex
	buckets *srclimit.Buckets[netip.Addr]
}

func newAdmission(allow []netip.Prefix, r rate.Limit, burst, max int) *admission {
	return &admission{allow: allow, buckets: srclimit.NewBuckets[netip.Addr](r, burst, max)}
}

// check decides for a query or connection from a at now.
func (a *admission) check(src netip.Addr, now time.Time) verdict {
	if !a.allowed(src) {
		return deniedSource
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.buckets.Get(src, now).AllowN(now, 1) {
		return deniedRate
	}
	return admitted
}

func (a *admission) allowed(src netip.Addr) bool {
	if !src.IsValid() {
		return false
	}
	for _, p := range a.allow {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// sources returns how many sources have their own limiter (for tests).
func (a *admission) sources() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.buckets.Len()
}

// addrOf returns the IP of a socket address, IPv4-mapped IPv6 unmapped
// (a dual-stack socket reports IPv4 sources that way) and without zone.
func addrOf(a net.Addr) netip.Addr {
	var ip netip.Addr
	switch v := a.(type) {
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(v.IP)
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(v.IP)
	default:
		if a == nil {
			return netip.Addr{}
		}
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.Addr{}
		}
		ip = ap.Addr()
	}
	return ip.Unmap().WithZone("")
}
