//go:build linux

package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Row sections: a row's ratios compare it with the baselines of its own
// section only.
const (
	sectionLoopback = "loopback"
	sectionLab      = "lab"
)

// row is one line of the bench table.
type row struct {
	section string
	label   string
	bps     float64       // throughput in bits per second; 0 when not measured
	rtt     time.Duration // average ping RTT; 0 when not measured
	rss     []procRSS     // peak RSS of the processes that carried the row
	anchor  *row          // the Tailscale row this one is set beside, if any
	note    string
	err     error // the measurement failed; the row says so
}

// procRSS is the peak resident set size of one process.
type procRSS struct {
	name  string
	bytes int64
}

// table is the one table a bench run prints. pipe, veth and wg are the
// baselines the ratio columns divide by (nil until measured).
type table struct {
	rows           []*row
	pipe, veth, wg *row
	footer         []string
}

func (t *table) add(r *row) *row {
	t.rows = append(t.rows, r)
	return r
}

// write prints the table. Ratios are throughput divided by the baseline's
// throughput, so 0.50 means half as fast.
func (t *table) write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROW\tTHROUGHPUT\t/PIPE\t/ANCHOR\t/VETH\t/WG-GO\tRTT AVG\tPEAK RSS (VmHWM)\tNOTE")
	for _, r := range t.rows {
		if r.err != nil {
			fmt.Fprintf(tw, "%s %s\tFAILED\t-\t-\t-\t-\t-\t-\t%s\n", r.section, r.label, shortError(r.err))
			continue
		}
		pipe, anchor, veth, wg := "-", "-", "-", "-"
		if r.section == sectionLoopback {
			pipe = ratio(r, t.pipe)
		} else {
			veth, wg = ratio(r, t.veth), ratio(r, t.wg)
		}
		if r.anchor != nil {
			anchor = ratio(r, r.anchor)
		}
		fmt.Fprintf(tw, "%s %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.section, r.label, formatBPS(r.bps),
			pipe, anchor, veth, wg, formatRTT(r.rtt), formatRSS(r.rss), r.note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, f := range t.footer {
		if _, err := fmt.Fprintln(w, f); err != nil {
			return err
		}
	}
	return nil
}

func ratio(r, base *row) string {
	if base == nil || base.err != nil || base.bps == 0 || r.bps == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", r.bps/base.bps)
}

func formatBPS(bps float64) string {
	switch {
	case bps == 0:
		return "-"
	case bps >= 1e9:
		return fmt.Sprintf("%.2f Gbit/s", bps/1e9)
	default:
		return fmt.Sprintf("%.0f Mbit/s", bps/1e6)
	}
}

func formatRTT(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond))
}

func formatRSS(ps []procRSS) string {
	if len(ps) == 0 {
		return "-"
	}
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = fmt.Sprintf("%s %.1f", p.name, float64(p.bytes)/(1<<20))
	}
	return strings.Join(parts, ", ") + " MiB"
}

// maxNoteLen keeps a failed row's error to one readable line; the full
// error goes to stderr.
const maxNoteLen = 100

func shortError(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	if len(s) > maxNoteLen {
		s = s[:maxNoteLen] + "..."
	}
	return s
}
