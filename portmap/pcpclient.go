package portmap

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// pcpClient speaks PCP's MAP (RFC 6887) for one port to one gateway.
type pcpClient struct {
	gw Gateway
	// nonce identifies our mapping to the server: renewals and the delete
	// must repeat it (section 11.2), and a response must echo it.
	nonce [12]byte
}

func newPCPClient(gw Gateway) (*pcpClient, error) {
	c := &pcpClient{gw: gw}
	if _, err := rand.Read(c.nonce[:]); err != nil {
		return nil, fmt.Errorf("PCP: nonce: %w", err)
	}
	return c, nil
}

func (c *pcpClient) probe(ctx context.Context) (netip.Addr, error) {
	m, err := c.exchange(ctx, appendPCPAnnounce(nil, c.gw.Self), func(m pcpMessage) bool { return m.opcode == pcpOpAnnounce })
	if err != nil {
		return netip.Addr{}, fmt.Errorf("PCP: %w", err)
	}
	if m.result != 0 {
		return netip.Addr{}, fmt.Errorf("PCP: %w", pcpError{m.result})
	}
	// ANNOUNCE carries no address; the server is there, which is all a
	// probe needs (MAP returns the address).
	return netip.Addr{}, nil
}

func (c *pcpClient) add(ctx context.Context, port uint16, prev Mapping, lifetime time.Duration) (Mapping, error) {
	suggest := netip.AddrPortFrom(netip.Addr{}, port)
	if prev.IsValid() {
		suggest = prev.External
	}
	req := appendPCPMap(nil, c.nonce, c.gw.Self, port, suggest, seconds(lifetime))
	m, err := c.exchange(ctx, req, c.matchMap(port))
	if err != nil {
		return Mapping{}, fmt.Errorf("PCP: mapping UDP %d: %w", port, err)
	}
	if m.result != 0 {
		return Mapping{}, fmt.Errorf("PCP: mapping UDP %d: %w", port, pcpError{m.result})
	}
	if !usableExternal(m.external.Addr()) || m.external.Port() == 0 || m.lifetime == 0 {
		return Mapping{}, fmt.Errorf("PCP: mapping UDP %d: the gateway assigned %s for %d s", port, m.external, m.lifetime)
	}
	return Mapping{
		Protocol: PCP,
		Internal: netip.AddrPortFrom(c.gw.Self, port),
		External: m.external,
		Lifetime: time.Duration(m.lifetime) * time.Second,
		Obtained: time.Now(),
	}, nil
}

func (c *pcpClient) remove(ctx context.Context, m Mapping) error {
	port := m.Internal.Port()
	req := appendPCPMap(nil, c.nonce, c.gw.Self, port, m.External, 0) // lifetime 0 deletes (section 15)
	r, err := c.exchange(ctx, req, c.matchMap(port))
	if err == nil && r.result != 0 {
		err = pcpError{r.result}
	}
	if err != nil {
		return fmt.Errorf("PCP: removing %s: %w", m.External, err)
	}
	return nil
}

// matchMap accepts only the answer to our MAP of port: section 11.3 has
// the client check the nonce, protocol and internal port.
func (c *pcpClient) matchMap(port uint16) func(pcpMessage) bool {
	return func(m pcpMessage) bool {
		if m.opcode != pcpOpMap {
			return false
		}
		if m.result != 0 && m.nonce == ([12]byte{}) {
			return true // an error answer without the opcode data
		}
		return m.nonce == c.nonce && m.protocol == protoUDP && m.internal == port
	}
}

// Retransmission of one exchange. The gateway is one hop away, so the
// first retry comes after 250 ms (NAT-PMP's RFC 6886 interval rather than
// PCP's 3 s, which would outlast the whole exchange), doubling; the
// caller's deadline ends it.
const (
	retransmitFirst = 250 * time.Millisecond
	retransmitMax   = 2 * time.Second
)

// exchange sends req to the gateway's PCP port until a response that
// match accepts arrives or ctx ends. The socket is connected, so the kernel
// delivers only the gateway's datagrams; others' answers are skipped.
func (c *pcpClient) exchange(ctx context.Context, req []byte, match func(pcpMessage) bool) (pcpMessage, error) {
	var d net.Dialer
	d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.gw.Self, 0))
	conn, err := d.DialContext(ctx, "udp4", netip.AddrPortFrom(c.gw.Addr, pcpPort).String())
	if err != nil {
		return pcpMessage{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()

	buf := make([]byte, pcpMaxSize+1) // one more, to see an oversized datagram as one
	gap := retransmitFirst
	var lastErr error
	for {
		if _, err := conn.Write(req); err != nil {
			return pcpMessage{}, err
		}
		next := time.Now().Add(gap)
		gap = min(2*gap, retransmitMax)
		if err := conn.SetReadDeadline(next); err != nil {
			return pcpMessage{}, err
		}
		for {
			n, err := conn.Read(buf)
			if ctx.Err() != nil {
				return pcpMessage{}, errors.Join(ctx.Err(), lastErr)
			}
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // retransmit
				}
				// ECONNREFUSED: an ICMP port unreachable came back, the
				// gateway runs no PCP server. Retrying would not help.
				return pcpMessage{}, fmt.Errorf("no PCP server on %s: %w", c.gw.Addr, err)
			}
			m, err := parsePCPResponse(buf[:n])
			if err != nil {
				if errors.Is(err, errNATPMPOnly) {
					return pcpMessage{}, err
				}
				lastErr = err
				continue
			}
			if match(m) {
				return m, nil
			}
		}
	}
}
