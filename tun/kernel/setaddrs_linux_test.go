package kernel

import (
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestSetAddrsMovesIPv4: the IPv4 collision rule moves a node's address
// within the mesh prefix. The new address must be there afterwards, the old
// one gone, and the mesh still routed to the device: with the kernel's
// promote_secondaries (Create turns it on) and without it (a container's
// read-only /proc/sys), where deleting the old primary address takes the
// new secondary one along.
func TestSetAddrsMovesIPv4(t *testing.T) {
	moved := netip.MustParsePrefix("100.64.7.7/10")
	for _, promote := range []string{"1", "0"} {
		t.Run("promote_secondaries="+promote, func(t *testing.T) {
			h := testNS(t)
			d := mustCreate(t, h, Config{Addrs: []netip.Prefix{nodeV4, nodeV6}})
			if err := h.Do(func() error {
				return os.WriteFile("/proc/sys/net/ipv4/conf/"+d.Name()+"/promote_secondaries", []byte(promote), 0o644)
			}); err != nil {
				t.Fatal(err)
			}
			if err := d.SetAddrs([]netip.Prefix{moved, nodeV6}); err != nil {
				t.Fatalf("SetAddrs: %v", err)
			}
			nl := nlHandle(t, h)
			link, err := nl.LinkByName(d.Name())
			if err != nil {
				t.Fatal(err)
			}
			list, err := nl.AddrList(link, netlink.FAMILY_ALL)
			if err != nil {
				t.Fatal(err)
			}
			got := map[netip.Prefix]bool{}
			for _, a := range list {
				ip, _ := netip.AddrFromSlice(a.IP)
				ones, _ := a.Mask.Size()
				got[netip.PrefixFrom(ip.Unmap(), ones)] = true
			}
			if !got[moved] || !got[nodeV6] || got[nodeV4] {
				t.Fatalf("addresses after the move: %v; want %s and %s, not %s", list, moved, nodeV6, nodeV4)
			}
			routes, err := nl.RouteGet(peerV4.AsSlice())
			if err != nil || len(routes) == 0 || routes[0].LinkIndex != link.Attrs().Index {
				t.Fatalf("route to a member %s after the move: %v, %v; want via %s", peerV4, routes, err, d.Name())
			}
			if err := h.Do(func() error {
				c, err := net.ListenPacket("udp4", netip.AddrPortFrom(moved.Addr(), 0).String())
				if err == nil {
					c.Close()
				}
				return err
			}); err != nil {
				t.Fatalf("binding the new address: %v", err)
			}
		})
	}
}
