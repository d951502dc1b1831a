package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/plures/plurenet/netcheck"
	"github.com/plures/plurenet/overlay"
)

func init() {
	register(command{name: "netcheck", summary: "check UDP, the NAT, port mapping, IPv6 and relays: can members reach this host directly?", run: runNetcheck})
}

// netcheckFlags are the settings of "up" that netcheck uses: the same
// flags, environment variables and config file keys, so that a node's
// config file checks the network that node will see.
var netcheckFlags = []string{"relay", "relay-fallback", "stun", "ca-file", "port-mapping"}

func runNetcheck(ctx context.Context, args []string, stdout io.Writer) error {
	var s upSettings
	var configPath string
	var table []setting
	for _, st := range s.table() {
		if slices.Contains(netcheckFlags, st.flag) {
			table = append(table, st)
		}
	}
	fs := newFlagSet("netcheck")
	registerSettings(fs, table, &configPath, "PLURENET_CONFIG")
	asJSON := fs.Bool("json", false, "print JSON (fields documented in docs/operations.md)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if _, err := resolveSettings(fs, table, configPath, "PLURENET_CONFIG", getenv); err != nil {
		return err
	}
	cfg, err := s.netcheckConfig()
	if err != nil {
		return err
	}
	log, _ := newLogger(os.Stderr, "warn")
	cfg.Logger = log
	rep, err := netcheck.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printNetcheck(stdout, rep)
	return nil
}

// netcheckConfig checks the settings netcheck uses.
func (s *upSettings) netcheckConfig() (netcheck.Config, error) {
	var cfg netcheck.Config
	relays, err := s.relayURLs()
	if err != nil {
		return cfg, err
	}
	cfg.Relays = relays
	switch {
	case len(s.STUN) == 1 && s.STUN[0] == "none":
	case len(s.STUN) > 0:
		for _, hp := range s.STUN {
			if _, _, err := net.SplitHostPort(hp); err != nil {
				return cfg, usageErrorf("--stun %q: want host:port", hp)
			}
		}
		cfg.STUNServers = s.STUN
	default:
		cfg.STUNServers = overlay.RelaySTUN(cfg.Relays)
	}
	// --port-mapping as "up" reads it: off, or the protocols to ask about.
	var node overlay.Config
	if err := s.portMapping(&node); err != nil {
		return cfg, err
	}
	cfg.NoPortMapping = node.NoPortMapping
	cfg.PortMapping.Protocols = node.PortMappingProtocols
	tlsConf, err := s.tlsConfig()
	cfg.TLSConfig = tlsConf
	return cfg, err
}

func printNetcheck(w io.Writer, r netcheck.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	switch answered := countMapped(r.STUN); {
	case len(r.STUN) == 0:
		fmt.Fprintln(tw, "UDP:\tnot tested (no STUN server)")
	case r.UDP:
		fmt.Fprintf(tw, "UDP:\tyes: %d of %d STUN servers answered (from local %s)\n", answered, len(r.STUN), r.Local)
	default:
		fmt.Fprintf(tw, "UDP:\tno: none of %d STUN servers answered\n", len(r.STUN))
	}
	printSTUN(tw, r.STUN)
	mapping := map[string]string{
		netcheck.MappingNone:        "none: this host has a public address",
		netcheck.MappingIndependent: "endpoint-independent: one public address and port for every destination",
		netcheck.MappingDependent:   "endpoint-dependent (\"symmetric\"): a new public port for every destination",
		netcheck.MappingUnknown:     "unknown: it takes answers from two STUN servers to tell",
	}[r.Mapping]
	fmt.Fprintf(tw, "NAT mapping:\t%s\n", mapping)
	switch pm := r.PortMapping; {
	case pm == nil:
		fmt.Fprintln(tw, "Port mapping:\tnot checked (--port-mapping off)")
	case pm.Error != "":
		fmt.Fprintf(tw, "Port mapping:\tno gateway to ask: %s\n", pm.Error)
	default:
		fmt.Fprintf(tw, "Port mapping:\tgateway %s\n", pm.Gateway)
		for _, p := range pm.Protocols {
			switch {
			case p.Available && p.External != "":
				fmt.Fprintf(tw, "  %s\tyes, external address %s\n", p.Protocol, p.External)
			case p.Available:
				fmt.Fprintf(tw, "  %s\tyes\n", p.Protocol)
			default:
				fmt.Fprintf(tw, "  %s\tno (%s)\n", p.Protocol, p.Error)
			}
		}
	}
	if len(r.IPv6.Global) == 0 {
		fmt.Fprintln(tw, "IPv6:\tno global address")
	} else {
		udp := "no STUN server has an IPv6 address"
		if len(r.IPv6.STUN) > 0 {
			udp = fmt.Sprintf("UDP over IPv6: %d of %d STUN servers answered", countMapped(r.IPv6.STUN), len(r.IPv6.STUN))
		}
		fmt.Fprintf(tw, "IPv6:\t%s; %s\n", strings.Join(r.IPv6.Global, ", "), udp)
		printSTUN(tw, r.IPv6.STUN)
	}
	if len(r.Relays) == 0 {
		fmt.Fprintln(tw, "Relays:\tnone configured")
	}
	for i, rl := range r.Relays {
		label := ""
		if i == 0 {
			label = "Relays:"
		}
		if rl.Error != "" {
			fmt.Fprintf(tw, "%s\t%s: %s\n", label, rl.URL, rl.Error)
		} else {
			fmt.Fprintf(tw, "%s\t%s: WebSocket open in %.1f ms\n", label, rl.URL, rl.HandshakeMs)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%s\n", r.Summary)
}

func printSTUN(w io.Writer, results []netcheck.STUNResult) {
	for _, s := range results {
		if s.Mapped != "" {
			fmt.Fprintf(w, "  %s\tsees this host as %s (%.1f ms)\n", s.Server, s.Mapped, s.RTTMs)
		} else {
			fmt.Fprintf(w, "  %s\t%s\n", s.Server, s.Error)
		}
	}
}

func countMapped(results []netcheck.STUNResult) int {
	n := 0
	for _, s := range results {
		if s.Mapped != "" {
			n++
		}
	}
	return n
}
