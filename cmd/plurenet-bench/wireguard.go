//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/plures/plurenet/internal/netlab"
	"github.com/plures/plurenet/internal/nodekey"
)

// Plain WireGuard's side of the lab: two wireguard-go processes configured
// statically, the baseline plurenet is compared with.
const (
	// uapiDir is where wireguard-go puts its control sockets. It is on the
	// file system, shared by every namespace: interface names must be
	// unique machine-wide, hence the PID in them.
	uapiDir = "/var/run/wireguard"
	wgPort  = 51820
	// wgMTU is plurenet's overlay MTU, so that row (b) differs from the
	// plurenet rows in the engine and transport, not the packet size.
	wgMTU = 1280
	// uapiWait bounds one UAPI exchange with a local daemon.
	uapiWait = 5 * time.Second
)

// wgPrefix is the tunnel subnet: outside the lab's internet and LANs and
// the mesh prefix, so it can coexist with all of them.
var wgPrefix = netip.MustParsePrefix("10.99.0.0/24")

// wireguardGo is row (b): wireguard-go on a and b with each other as the
// only peer, over the same veths.
func (b *bench) wireguardGo() *row {
	r := &row{section: sectionLab, label: "(b) wireguard-go, static peers", note: fmt.Sprintf("MTU %d like plurenet", wgMTU)}
	if b.cfg.wireguardGo == "" {
		r.err = errNoWireguardGo
		return r
	}
	var ps procs
	defer func() { ps.finish(r) }()
	type end struct {
		host   *netlab.Host
		iface  string
		priv   nodekey.Private
		tunnel netip.Addr
	}
	ends := []*end{{host: b.a}, {host: b.b}}
	for i, e := range ends {
		var err error
		if e.priv, err = nodekey.NewPrivate(); err != nil {
			r.err = err
			return r
		}
		e.iface = fmt.Sprintf("wgb%d%s", os.Getpid()%1000000, e.host.Name())
		e.tunnel = wgPrefix.Addr().Next()
		for range i {
			e.tunnel = e.tunnel.Next()
		}
		// env execs wireguard-go in place (the PID stays that of the
		// daemon, for its RSS); WG_PROCESS_FOREGROUND=1 keeps it in the
		// foreground without its banner about the kernel module.
		p := e.host.Start(context.Background(), "env", "WG_PROCESS_FOREGROUND=1", b.cfg.wireguardGo, "-f", e.iface)
		ps = append(ps, &namedProc{name: "wg-" + e.host.Name(), p: p})
		if err := waitFile(filepath.Join(uapiDir, e.iface+".sock"), p); err != nil {
			r.err = fmt.Errorf("wireguard-go on %s: %w", e.host.Name(), err)
			return r
		}
	}
	for i, e := range ends {
		peer := ends[1-i]
		cfg := fmt.Sprintf("private_key=%s\nlisten_port=%d\nreplace_peers=true\npublic_key=%s\nendpoint=%s\nreplace_allowed_ips=true\nallowed_ip=%s\n",
			e.priv.Hex(), wgPort, peer.priv.Public().Hex(),
			netip.AddrPortFrom(peer.host.Addr(), wgPort), netip.PrefixFrom(peer.tunnel, 32))
		if err := uapiSet(filepath.Join(uapiDir, e.iface+".sock"), cfg); err != nil {
			r.err = fmt.Errorf("configuring wireguard-go on %s: %w", e.host.Name(), err)
			return r
		}
		for _, args := range [][]string{
			{"addr", "add", netip.PrefixFrom(e.tunnel, wgPrefix.Bits()).String(), "dev", e.iface},
			{"link", "set", "dev", e.iface, "mtu", fmt.Sprint(wgMTU), "up"},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), commandWait)
			out, err := e.host.Run(ctx, "ip", args...).CombinedOutput()
			cancel()
			if err != nil {
				r.err = fmt.Errorf("%s: ip %s: %w: %s", e.host.Name(), strings.Join(args, " "), err, out)
				return r
			}
		}
	}
	b.measure(r, ps, ends[1].tunnel, iperfPort, ends[1].tunnel)
	return r
}

// waitFile waits until path exists, or p exits.
func waitFile(path string, p *netlab.Proc) error {
	deadline := time.Now().Add(startWait)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("exited: %v: %s", p.Wait(), lastLines(p.Output(), 5))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s after %v", path, startWait)
		}
		time.Sleep(poll)
	}
}

// uapiSet sends one "set" operation of WireGuard's cross-platform
// configuration protocol (https://www.wireguard.com/xplatform/) to a
// daemon's control socket: the set=1 line, the settings, an empty line;
// the daemon answers errno=N and an empty line.
func uapiSet(sock, settings string) error {
	c, err := net.DialTimeout("unix", sock, uapiWait)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(uapiWait))
	if _, err := fmt.Fprintf(c, "set=1\n%s\n", settings); err != nil {
		return fmt.Errorf("%s: %w", sock, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("%s: reading the answer: %w", sock, err)
	}
	if line = strings.TrimSpace(line); line != "errno=0" {
		return fmt.Errorf("%s: %s", sock, line)
	}
	return nil
}
