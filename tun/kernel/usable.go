package kernel

import (
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Bounds of waitUsable: a new address is usable at once or within DAD's
// second or so; much longer means something else is wrong, and the node
// then finds out when it binds.
const (
	usableWait = 3 * time.Second
	usablePoll = 20 * time.Millisecond
)

// waitUsable waits until a UDP socket can be bound to each of addrs, for
// at most wait. On macOS a new IPv6 address is "tentative" while duplicate
// address detection runs (ifconfig has no way to skip it on utun), and
// binding it fails with EADDRNOTAVAIL until then; the node binds its
// listeners and DNS sockets to these addresses right after Create. Binding
// is the check because it is exactly what the node needs, on every OS.
func waitUsable(addrs []netip.Prefix, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for _, p := range addrs {
		for {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.Addr(), 0)))
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("address %s not usable after %v: %w", p.Addr(), wait, err)
			}
			time.Sleep(usablePoll)
		}
	}
	return nil
}
