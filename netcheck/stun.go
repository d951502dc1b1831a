package netcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v4"
)

// STUN requests are retransmitted (UDP loses packets) every stunRetry
// until the caller's deadline; answers are read into stunBuffer bytes, and
// at most stunMaxDatagrams datagrams are read per run, whoever sends them.
const (
	stunRetry        = 500 * time.Millisecond
	stunBuffer       = 1500
	stunMaxDatagrams = 256
)

// stunTarget is a STUN server resolved for one address family.
type stunTarget struct {
	server string // as configured
	addr   netip.AddrPort
}

// resolveSTUN looks servers up for network ("udp4" or "udp6"). Servers
// without an address of that family are left out; results holds, in the
// order of servers, the outcome of those that failed to resolve.
func resolveSTUN(ctx context.Context, network string, servers []string) (targets []stunTarget, failed []STUNResult) {
	family := "ip4"
	if network == "udp6" {
		family = "ip6"
	}
	for _, s := range servers {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			failed = append(failed, STUNResult{Server: s, Error: "want host:port"})
			continue
		}
		p, err := net.LookupPort("udp", port)
		if err != nil {
			failed = append(failed, STUNResult{Server: s, Error: err.Error()})
			continue
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, family, host)
		if err != nil || len(ips) == 0 {
			if network == "udp4" {
				failed = append(failed, STUNResult{Server: s, Error: fmt.Sprintf("no IPv4 address: %v", err)})
			}
			continue
		}
		targets = append(targets, stunTarget{server: s, addr: netip.AddrPortFrom(ips[0].Unmap(), uint16(p))})
	}
	return targets, failed
}

// stunAll asks every target, from one socket of network, for this host's
// address as it sees it, until every one answered or ctx ends. One socket
// for all is the point: comparing what the servers saw tells how the NAT
// maps one local port to different destinations.
func stunAll(ctx context.Context, network string, targets []stunTarget) ([]STUNResult, netip.AddrPort, error) {
	results := make([]STUNResult, len(targets))
	for i, tg := range targets {
		results[i] = STUNResult{Server: tg.server, Addr: tg.addr.String(), Error: "no answer"}
	}
	if len(targets) == 0 {
		return results, netip.AddrPort{}, nil
	}
	c, err := net.ListenUDP(network, nil)
	if err != nil {
		return results, netip.AddrPort{}, err
	}
	defer c.Close()
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()

	ids := make([][stun.TransactionIDSize]byte, len(targets))
	raws := make([][]byte, len(targets))
	sent := make([]time.Time, len(targets)) // first send, for the round-trip time
	for i := range targets {
		m, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
		if err != nil {
			return results, local, err
		}
		ids[i], raws[i] = m.TransactionID, m.Raw
	}
	left := len(targets)
	buf := make([]byte, stunBuffer)
	reads := 0
	for left > 0 && ctx.Err() == nil {
		for i, tg := range targets {
			if results[i].Mapped != "" {
				continue
			}
			if sent[i].IsZero() {
				sent[i] = time.Now()
			}
			if _, err := c.WriteToUDPAddrPort(raws[i], tg.addr); err != nil {
				results[i].Error = err.Error()
			}
		}
		_ = c.SetReadDeadline(time.Now().Add(stunRetry))
		for left > 0 && reads < stunMaxDatagrams {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return results, local, err
			}
			reads++
			i, mapped, ok := matchSTUN(buf[:n], from, targets, ids)
			if !ok || results[i].Mapped != "" {
				continue
			}
			results[i].Mapped = mapped.String()
			results[i].RTTMs = float64(time.Since(sent[i]).Microseconds()) / 1000
			results[i].Error = ""
			left--
		}
		if reads >= stunMaxDatagrams {
			break
		}
	}
	return results, local, nil
}

// matchSTUN parses a datagram as the answer to one of our requests: a
// Binding Success from that request's server with its transaction ID and
// a mapped address.
func matchSTUN(b []byte, from netip.AddrPort, targets []stunTarget, ids [][stun.TransactionIDSize]byte) (int, netip.AddrPort, bool) {
	if !stun.IsMessage(b) {
		return 0, netip.AddrPort{}, false
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil || m.Type != stun.BindingSuccess {
		return 0, netip.AddrPort{}, false
	}
	for i, tg := range targets {
		if ids[i] != m.TransactionID || tg.addr != netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) {
			continue
		}
		var xor stun.XORMappedAddress
		if err := xor.GetFrom(m); err == nil {
			if a, ok := netip.AddrFromSlice(xor.IP); ok && xor.Port > 0 && xor.Port < 1<<16 {
				return i, netip.AddrPortFrom(a.Unmap(), uint16(xor.Port)), true
			}
		}
		var plain stun.MappedAddress
		if err := plain.GetFrom(m); err == nil {
			if a, ok := netip.AddrFromSlice(plain.IP); ok && plain.Port > 0 && plain.Port < 1<<16 {
				return i, netip.AddrPortFrom(a.Unmap(), uint16(plain.Port)), true
			}
		}
		return 0, netip.AddrPort{}, false
	}
	return 0, netip.AddrPort{}, false
}

// classifyMapping tells the NAT's mapping from what the servers saw: own
// are this host's own addresses.
func classifyMapping(results []STUNResult, own map[netip.Addr]bool) string {
	var seen []netip.AddrPort
	for _, r := range results {
		if a, err := netip.ParseAddrPort(r.Mapped); err == nil {
			if own[a.Addr()] {
				return MappingNone
			}
			seen = append(seen, a)
		}
	}
	if len(seen) < 2 {
		return MappingUnknown
	}
	for _, a := range seen[1:] {
		if a != seen[0] {
			return MappingDependent
		}
	}
	return MappingIndependent
}
