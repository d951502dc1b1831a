package netlab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// A router's port-mapping daemon: Debian's miniupnpd (package
// miniupnpd-nftables), speaking UPnP IGD, NAT-PMP and PCP on the router's
// LAN and adding its forwards to nftables, as on a home router.
//
// Three things the lab has to arrange for it:
//   - miniupnpd's nftables backend adds rules to chains it expects to
//     exist (Debian's nft_init.sh makes them): the router gets a table
//     with a forward chain and NAT chains that jump to miniupnpd's own.
//   - The lab's internet, 198.18.0.0/15, is a range miniupnpd counts as
//     private; it maps ports behind a private WAN address only after STUN
//     has shown that nothing upstream translates or filters. So it asks a
//     STUN server on the lab internet, from the router's own address: that
//     traffic is exempt from the router's masquerading, as a real router's
//     own traffic is (it already has the WAN address; with Random the
//     masquerade would move its ports, and miniupnpd would call that a
//     restrictive NAT).
//   - The router drops new connections from the WAN (NATRouter); a
//     forward miniupnpd set up (a DNAT) is let through first, as home
//     routers do.

// portMapperTable is the nftables table the lab gives miniupnpd.
const portMapperTable = "miniupnpd"

// portMapperNFT are the chains miniupnpd's rules go in, hooked into the
// router's forwarding and NAT.
const portMapperNFT = `table inet ` + portMapperTable + ` {
	chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }
	chain miniupnpd { }
	chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
	chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }
	chain prerouting_miniupnpd { }
	chain postrouting_miniupnpd { }
}
`

// PortMapperMissing returns why StartPortMapper cannot run here, or "".
func PortMapperMissing() string {
	for _, bin := range []string{"miniupnpd", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Sprintf("netlab: %s not found (Debian: apt-get install miniupnpd-nftables nftables; scripts/deps.sh does)", bin)
		}
	}
	return ""
}

// StartPortMapper runs miniupnpd on the router, with NAT-PMP, PCP and UPnP
// IGD on its LAN, secure mode (a host may map ports only to itself), and
// stun, a STUN server on the lab internet, to check its WAN with. It skips
// the test when miniupnpd or nft is missing, and returns once miniupnpd
// maps ports. The daemon is stopped at the lab's cleanup, or by killing
// the returned Proc.
func (r *Router) StartPortMapper(stun netip.AddrPort) *Proc {
	l := r.lab
	l.t.Helper()
	if why := PortMapperMissing(); why != "" {
		l.t.Skip(why)
	}
	ctx := context.Background()
	dir := l.t.TempDir()
	nftFile := filepath.Join(dir, "tables.nft")
	if err := os.WriteFile(nftFile, []byte(portMapperNFT), 0o600); err != nil {
		l.t.Fatalf("netlab: %v", err)
	}
	if out, err := r.Run(ctx, "nft", "-f", nftFile).CombinedOutput(); err != nil {
		l.t.Fatalf("netlab: router %s: nft tables for miniupnpd: %v: %s", r.name, err, out)
	}
	for _, rule := range [][]string{
		{"-t", "nat", "-I", "POSTROUTING", "1", "-s", r.Addr().String(), "-o", r.uplink, "-j", "RETURN"},
		{"-I", "FORWARD", "1", "-i", r.uplink, "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"},
	} {
		if err := r.iptables(ctx, rule...); err != nil {
			l.t.Fatalf("netlab: router %s: %v", r.name, err)
		}
	}
	conf := strings.Join([]string{
		"ext_ifname=" + r.uplink,
		"listening_ip=lan",
		"http_port=0",
		"enable_natpmp=yes",
		"enable_upnp=yes",
		"secure_mode=yes",
		"ext_perform_stun=yes",
		"ext_stun_host=" + stun.Addr().String(),
		"ext_stun_port=" + strconv.Itoa(int(stun.Port())),
		"upnp_table_name=" + portMapperTable,
		"upnp_nat_table_name=" + portMapperTable,
		"upnp_forward_chain=miniupnpd",
		"upnp_nat_chain=prerouting_miniupnpd",
		"upnp_nat_postrouting_chain=postrouting_miniupnpd",
		"uuid=7c1c8f3e-6a7e-4a8e-9b0e-" + fmt.Sprintf("%012x", time.Now().UnixNano()&0xffffffffffff),
		"allow 1024-65535 " + r.LANPrefix().String() + " 1024-65535",
		"deny 0-65535 0.0.0.0/0 0-65535",
		"",
	}, "\n")
	confFile := filepath.Join(dir, "miniupnpd.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		l.t.Fatalf("netlab: %v", err)
	}
	p := r.Start(ctx, "miniupnpd", "-d", "-f", confFile, "-P", filepath.Join(dir, "miniupnpd.pid"))
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(p.Output(), "Listening for NAT-PMP/PCP traffic") {
		select {
		case <-p.Done():
			l.t.Fatalf("netlab: router %s: miniupnpd exited: %v\n%s", r.name, p.Wait(), p.Output())
		default:
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("netlab: router %s: miniupnpd not listening after 20 s:\n%s", r.name, p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(p.Output(), "Port forwarding is now enabled") {
		l.t.Fatalf("netlab: router %s: miniupnpd does not forward ports:\n%s", r.name, p.Output())
	}
	return p
}

var dnatPort = regexp.MustCompile(`dport (\d+) .*dnat`)

// MappedPorts returns the external UDP and TCP ports miniupnpd currently
// forwards on the router, sorted.
func (r *Router) MappedPorts() ([]uint16, error) {
	out, err := r.Run(context.Background(), "nft", "list", "chain", "inet", portMapperTable, "prerouting_miniupnpd").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("router %s: listing miniupnpd's forwards: %w: %s", r.name, err, out)
	}
	var ports []uint16
	for _, m := range dnatPort.FindAllStringSubmatch(string(out), -1) {
		p, err := strconv.ParseUint(m[1], 10, 16)
		if err == nil {
			ports = append(ports, uint16(p))
		}
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	return ports, nil
}
