package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/plures/plurenet/overlay"
)

func init() {
	register(command{name: "status", summary: "show a running node's members, IPs and paths", run: runStatus})
	register(command{name: "ip", summary: "print a running node's overlay IP", run: runIP})
}

// statusTimeout bounds how long a status query waits for the node.
const statusTimeout = 5 * time.Second

func queryStatus(ctx context.Context, stateDir string) (overlay.Status, error) {
	dir := stateDirOf(stateDir)
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	return overlay.QueryStatus(ctx, dir)
}

func runStatus(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("status")
	stateDir := fs.String("state-dir", "", stateDirUsage())
	asJSON := fs.Bool("json", false, "print JSON (fields documented in docs/operations.md)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	st, err := queryStatus(ctx, *stateDir)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(stdout, st, time.Now())
	return nil
}

func printStatus(w io.Writer, st overlay.Status, now time.Time) {
	fmt.Fprintf(w, "%s  %s  %s  key %s  (%s, transport %s", st.Name, st.IPv4, st.IPv6, st.PublicKey[:8], st.Adapter, st.Transport)
	if st.UDP != "" {
		fmt.Fprintf(w, ", udp %s", st.UDP)
	}
	if pm := st.PortMapping; pm != nil {
		fmt.Fprintf(w, ", mapped to %s by %s", pm.External, pm.Protocol)
	}
	fmt.Fprintln(w, ")")
	for _, warn := range st.Warnings {
		fmt.Fprintf(w, "WARNING: %s\n", warn)
	}
	printDNS(w, "", st.DNS)
	if st.ForeignDropped > 0 {
		fmt.Fprintf(w, "dropped %d packets from members that were not addressed to this node\n", st.ForeignDropped)
	}
	if o := st.Owned; o != nil && o.PolicyVersion > 0 {
		fmt.Fprintf(w, "access policy version %d: denied %d packets from members\n", o.PolicyVersion, o.Denied)
	}
	for _, r := range st.Relays {
		state := "connected"
		if !r.Connected {
			state = "DISCONNECTED"
			if r.LastError != "" {
				state += ": " + r.LastError + " (retrying)"
			}
		}
		fmt.Fprintf(w, "relay %-8s %s  %s, %d reconnects\n", r.Role, r.URL, state, r.Reconnects)
	}
	printDHT(w, st.DHT, now)
	if len(st.Members) == 0 {
		fmt.Fprintln(w, "no other members yet")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nMEMBER\tIPV4\tIPV6\tPATH\tHANDSHAKE\tRX\tTX")
	for _, m := range st.Members {
		path := m.Path
		if path == "" {
			path = "-"
		}
		if d := m.Direct; d != nil {
			switch {
			case path == "direct" && d.Remote != "":
				path = fmt.Sprintf("direct %s %.2fms", d.Remote, d.RTTMs)
			case d.State != "direct":
				path += " (direct: " + d.State + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", orDash(m.Name), m.IPv4, m.IPv6, path,
			ago(now, m.LastHandshake), bytesString(m.RxBytes), bytesString(m.TxBytes))
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}

func bytesString(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func runIP(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("ip")
	stateDir := fs.String("state-dir", "", stateDirUsage())
	v6 := fs.Bool("6", false, "print the IPv6 address instead")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	st, err := queryStatus(ctx, *stateDir)
	if err != nil {
		return err
	}
	if *v6 {
		fmt.Fprintln(stdout, st.IPv6)
	} else {
		fmt.Fprintln(stdout, strings.TrimSpace(st.IPv4))
	}
	return nil
}
