package discovery

import (
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/plures/plurenet/internal/mesh"
)

// Candidates in swarm mode. A member names its direct socket in the
// Candidates of its sealed announcements (docs/protocol.md 2.4, 2.8) as
// "udp4 IP:PORT host", the form of the protocol's example, one per IPv4
// address of the socket. A receiver that heard the announcement somewhere
// other than that socket (LAN multicast, later the DHT) learns from them
// where to send.
const (
	candidatePrefix = "udp4 "
	candidateSuffix = " host"
)

// Candidates returns what a member whose direct socket is bound to local
// announces: the bound address, or, for a socket bound to every address,
// each IPv4 address of the interfaces that are up (not loopback), sorted so
// that the announcement changes only when the addresses do; at most
// mesh.MaxCandidates. With no address to name it is 0.0.0.0 and the port:
// a receiver then takes the IP from where the announcement came.
func Candidates(local netip.AddrPort) []string {
	var ips []netip.Addr
	if a := local.Addr().Unmap(); !a.IsUnspecified() {
		ips = append(ips, a)
	} else if ifs, err := net.InterfaceAddrs(); err == nil {
		for _, ia := range ifs {
			p, ok := ia.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(p.IP)
			if ip = ip.Unmap(); ok && ip.Is4() && !ip.IsLoopback() && !ip.IsUnspecified() {
				ips = append(ips, ip)
			}
		}
	}
	slices.SortFunc(ips, func(a, b netip.Addr) int { return a.Compare(b) })
	ips = slices.Compact(ips)
	var out []string
	for _, ip := range ips {
		if len(out) == mesh.MaxCandidates {
			break
		}
		out = append(out, FormatCandidate(netip.AddrPortFrom(ip, local.Port())))
	}
	if len(out) == 0 {
		out = append(out, FormatCandidate(netip.AddrPortFrom(netip.IPv4Unspecified(), local.Port())))
	}
	return out
}

// FormatCandidate is the candidate naming the direct socket at a.
func FormatCandidate(a netip.AddrPort) string {
	return candidatePrefix + a.String() + candidateSuffix
}

// ParseCandidate reads a swarm-mode candidate, "udp4 IP:PORT host". Other
// candidate forms (ICE's, in auto mode) are not for swarm mode: ok false.
// The IP may be 0.0.0.0 (see Candidates); the port is never 0.
func ParseCandidate(s string) (netip.AddrPort, bool) {
	f := strings.Fields(s)
	if len(f) < 2 || f[0] != strings.TrimSpace(candidatePrefix) {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(f[1])
	if err != nil || !ap.Addr().Is4() || ap.Port() == 0 {
		return netip.AddrPort{}, false
	}
	return ap, true
}
