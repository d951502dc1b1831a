package discovery

import (
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/transports/direct"
)

// Candidates in swarm mode. A member names its direct socket in the
// Candidates of its sealed announcements (docs/protocol.md 2.4, 2.8) as
// "udp4 IP:PORT host" or "udp6 [IP]:PORT host", the forms of the
// protocol's example, one per address of the socket. A receiver that heard
// the announcement somewhere other than that socket (LAN multicast, later
// the DHT) learns from them where to send.
const (
	candidatePrefix4 = "udp4 "
	candidatePrefix6 = "udp6 "
	candidateSuffix  = " host"
)

// Candidates returns what a member whose direct socket is bound to local
// announces: the bound address, or, for a socket bound to every address,
// each address of the interfaces that are up that a peer can send to
// (direct.ValidRemote: not loopback, not link-local), IPv4 first, then
// IPv6 (for a dual-stack socket, "[::]"), each sorted, so that the
// announcement changes only when the addresses do; at most
// mesh.MaxCandidates, the IPv4 ones kept first (they are what LAN
// discovery matches). With no address to name it is 0.0.0.0 and the port:
// a receiver then takes the IP from where the announcement came.
func Candidates(local netip.AddrPort) []string {
	var ips []netip.Addr
	bound := local.Addr()
	if a := bound.Unmap(); !a.IsUnspecified() {
		ips = append(ips, a)
	} else if ifs, err := net.InterfaceAddrs(); err == nil {
		dual := bound.Is6() && !bound.Is4In6()
		for _, ia := range ifs {
			p, ok := ia.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(p.IP)
			ip = ip.Unmap()
			if !ok || ip.IsLoopback() || !direct.ValidRemote(netip.AddrPortFrom(ip, 1)) || (ip.Is6() && !dual) {
				continue
			}
			ips = append(ips, ip)
		}
	}
	slices.SortFunc(ips, func(a, b netip.Addr) int { return a.Compare(b) }) // IPv4 sorts before IPv6
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
	a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	if a.Addr().Is6() {
		return candidatePrefix6 + a.String() + candidateSuffix
	}
	return candidatePrefix4 + a.String() + candidateSuffix
}

// ParseCandidate reads a swarm-mode candidate, "udp4 IP:PORT host" or
// "udp6 [IP]:PORT host". Other candidate forms (ICE's, in auto mode) are
// not for swarm mode: ok false. The family must match the prefix; the IP
// may be 0.0.0.0 (see Candidates); the port is never 0. Whether the
// address is usable is the caller's check (direct.ValidRemote).
func ParseCandidate(s string) (netip.AddrPort, bool) {
	f := strings.Fields(s)
	if len(f) < 2 {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(f[1])
	if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
		return netip.AddrPort{}, false
	}
	switch f[0] {
	case strings.TrimSpace(candidatePrefix4):
		if !ap.Addr().Is4() {
			return netip.AddrPort{}, false
		}
	case strings.TrimSpace(candidatePrefix6):
		if !ap.Addr().Is6() || ap.Addr().Is4In6() {
			return netip.AddrPort{}, false
		}
	default:
		return netip.AddrPort{}, false
	}
	return ap, true
}
