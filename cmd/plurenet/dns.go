package main

import (
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/plures/plurenet/dns/names"
	"github.com/plures/plurenet/overlay"
)

// dnsConfig checks the names-over-DNS settings of "plurenet up".
func (s *upSettings) dnsConfig(cfg *overlay.Config) error {
	switch s.DNS {
	case "", "on":
	case "off":
		if s.DNSSuffix != "" || len(s.DNSListen) > 0 || s.HostsFile != "" {
			return usageErrorf("--dns off turns names over DNS off: drop --dns-suffix, --dns-listen and --hosts-file, or use --dns on")
		}
		cfg.DNS.Off = true
		return nil
	default:
		return usageErrorf("--dns %q: want on or off", s.DNS)
	}
	if s.DNSSuffix != "" {
		suffix, err := names.ParseSuffix(s.DNSSuffix)
		if err != nil {
			return usageErrorf("--dns-suffix: %v", err)
		}
		cfg.DNS.Suffix = suffix
	}
	for _, l := range s.DNSListen {
		ap, err := netip.ParseAddrPort(l)
		if err != nil {
			return usageErrorf("--dns-listen %q: want a loopback ADDR:PORT such as 127.0.0.1:5353", l)
		}
		if !ap.Addr().IsLoopback() {
			return usageErrorf("--dns-listen %q: not a loopback address; the resolver answers only the mesh and this host, so it listens on 127.0.0.1:PORT or [::1]:PORT", l)
		}
		cfg.DNS.Listen = append(cfg.DNS.Listen, ap)
	}
	if s.HostsFile != "" {
		// Absolute, so that the block is removed from the file it was
		// written to whatever the working directory.
		p, err := filepath.Abs(s.HostsFile)
		if err != nil {
			return usageErrorf("--hosts-file %q: %v", s.HostsFile, err)
		}
		cfg.DNS.HostsFile = p
	}
	return nil
}

// printDNS tells the user where members' names resolve, on one line
// starting with prefix ("plurenet: " at start, "" in status).
func printDNS(w io.Writer, prefix string, d *overlay.DNSStatus) {
	if d == nil {
		return
	}
	var where []string
	if d.Address != "" {
		where = append(where, d.Address+" on the mesh")
	}
	where = append(where, d.Listen...)
	if d.SplitDNS {
		where = append(where, "this host's resolver (systemd-resolved)")
	}
	if d.HostsFile != "" {
		where = append(where, d.HostsFile)
	}
	if len(where) == 0 {
		where = append(where, "nowhere yet (see plurenet status)")
	}
	fmt.Fprintf(w, "%snames: NAME.%s (this node: %s), served at %s\n", prefix, d.Suffix, orDash(d.Name), strings.Join(where, ", "))
	if len(d.Ambiguous) > 0 {
		fmt.Fprintf(w, "%snames claimed by two members, resolving to neither: %s\n", prefix, strings.Join(d.Ambiguous, " "))
	}
}
