//go:build linux

// Command plurenet-bench is "make bench": it measures plurenet beside its
// baselines in one run and prints one table of ratios.
//
// Without privileges it measures on loopback: the relay forwarding between
// two clients against a plain TCP pipe (the Go benchmarks of
// transports/relay); relay forwarding client to client beside Tailscale's
// DERP server (cmd/derper and its derphttp clients, built by bench/derp);
// two embedded nodes in one process sending 256 MiB over TCP on the direct
// path, beside tsnet (bench/tsnet, which needs root for its closed network
// namespace), and through --forward/--expose; and the time from starting
// two nodes to their first TCP byte.
//
// As root it also builds a network lab (internal/netlab): hosts a and b
// and a relay host on one bridge, and measures TCP throughput (iperf3) and
// ping RTT from a to b over (a) the bare veths, (b) wireguard-go with
// static peers, (c) plurenet with kernel TUN devices (auto: the hosts share
// a bridge, so the path is direct without NAT), (d) plurenet's userspace
// adapter through --forward and --expose, (e) plurenet forced onto the
// relay, with the peak RSS of every process involved. Then two more hosts,
// each behind its own home NAT router: (f) plurenet kernel TUN on the path
// auto finds (direct, hole punched through both NATs), (g) the time from
// starting both nodes until status shows the direct path, (h) the time
// from blocking UDP at one router until a continuous ping gets replies
// again through the relay; (i)-(j) first bytes between members meeting
// through a DHT and through the relay (dhtmeet.go); (k) the time from two
// members joining to the first ping reply, median and worst over 50 fresh
// joins. Ratios
// compare rows of the same run; the absolute numbers say more about the
// machine than about plurenet.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

func main() {
	os.Exit(run())
}

func run() int {
	repo := flag.String("repo", ".", "the plurenet repository (for go test -bench)")
	plurenet := flag.String("plurenet", "bin/plurenet", "plurenet binary for the lab rows")
	wg := flag.String("wireguard-go", "", "wireguard-go binary for lab row (b)")
	benchtime := flag.Duration("benchtime", 2*time.Second, "go test -benchtime of the relay benchmarks")
	duration := flag.Duration("duration", 5*time.Second, "length of each throughput measurement")
	pings := flag.Int("pings", 20, "pings per RTT measurement")
	iperfRuns := flag.Int("iperf-runs", 3, "iperf3 runs per lab throughput row; the row shows the median")
	embeddedRuns := flag.Int("embedded-runs", 3, "transfers per embedded-node row (tsnet's and plurenet's in turn); the row shows the median")
	noLab := flag.Bool("no-lab", false, "measure the loopback rows only")
	labOnly := flag.Bool("lab-only", false, "measure the lab rows only (root), not the loopback rows")
	labRowSel := flag.String("lab-rows", "", "letters of the lab rows to measure, e.g. bcde (default all)")
	derper := flag.String("derper", "", "Tailscale's cmd/derper binary (bench/derp) for the DERP anchor row")
	derpfwd := flag.String("derpfwd", "", "bench/derp's derpfwd binary for the DERP anchor row")
	tsnetpair := flag.String("tsnetpair", "", "bench/tsnet's tsnetpair binary for the tsnet anchor row")
	isolate := flag.String("isolate", "", "bench/tsnet/isolated.sh, which runs tsnetpair in a closed network namespace (root)")
	fwdDuration := flag.Duration("fwd-duration", 10*time.Second, "how long each relay forwarding row sends")
	worker := flag.String("worker", "", "internal: run one in-process measurement (embedded or forward) and print it as JSON")
	bytes := flag.Int64("bytes", embeddedBytes, "with -worker: bytes to send")
	cpuProfile := flag.String("cpuprofile", "", "with -worker: write a CPU profile of the transfer to `file` (make profile)")
	memProfile := flag.String("memprofile", "", "with -worker: write an allocation profile to `file` after the transfer")
	flag.Parse()
	if *worker != "" {
		return runWorker(*worker, workerOptions{bytes: *bytes, cpuProfile: *cpuProfile, memProfile: *memProfile})
	}
	if *duration < time.Second || *pings < 1 || *iperfRuns < 1 || *embeddedRuns < 1 || *benchtime <= 0 {
		fmt.Fprintln(os.Stderr, "plurenet-bench: -duration must be at least 1s, -pings, -iperf-runs and -embedded-runs at least 1, -benchtime positive")
		return 2
	}
	if strings.Trim(*labRowSel, labRowLetters) != "" {
		fmt.Fprintf(os.Stderr, "plurenet-bench: -lab-rows %q: only the letters %s\n", *labRowSel, labRowLetters)
		return 2
	}
	if *labOnly && *noLab {
		fmt.Fprintln(os.Stderr, "plurenet-bench: -lab-only and -no-lab measure nothing together")
		return 2
	}
	ctx := context.Background()
	var t table
	t.footer = append(t.footer, "")
	failed := false

	if *labOnly {
		t.footer = append(t.footer, "loopback rows: skipped (-lab-only)")
	} else {
		fmt.Fprintln(os.Stderr, "plurenet-bench: relay Go benchmarks (go test -bench ./transports/relay)...")
		pipe, relay, relayTLS := relayGoBenchmarks(ctx, *repo, *benchtime)
		t.pipe = t.add(pipe)
		t.add(relay)
		t.add(relayTLS)
		fmt.Fprintln(os.Stderr, "plurenet-bench: relay forwarding beside DERP...")
		fwdRows(ctx, &t, *plurenet, *derper, *derpfwd, *fwdDuration)
		fmt.Fprintln(os.Stderr, "plurenet-bench: two embedded nodes beside tsnet...")
		embeddedRows(ctx, &t, *tsnetpair, *isolate, *embeddedRuns)
		fmt.Fprintln(os.Stderr, "plurenet-bench: revocation in an owned mesh on loopback...")
		t.add(revokeLoopback(ctx))
	}

	switch {
	case *noLab:
		t.footer = append(t.footer, "lab rows (a)-(k): skipped (-no-lab)")
	case os.Geteuid() != 0:
		t.footer = append(t.footer, "lab rows (a)-(k): need root (network namespaces, TUN devices): run make bench as root")
	default:
		if _, err := os.Stat(*plurenet); err != nil {
			fmt.Fprintf(os.Stderr, "plurenet-bench: -plurenet: %v\n", err)
			return 2
		}
		fmt.Fprintln(os.Stderr, "plurenet-bench: network lab rows (a)-(k)...")
		rows, out := labRows(labConfig{plurenet: *plurenet, wireguardGo: *wg, iperfTime: *duration, iperfRuns: *iperfRuns, pings: *pings, rows: *labRowSel})
		for _, r := range rows {
			switch {
			case strings.HasPrefix(r.label, "(a)"):
				t.veth = r
			case strings.HasPrefix(r.label, "(b)"):
				t.wg = r
			}
			t.add(r)
		}
		switch {
		case out.Skipped != "":
			t.footer = append(t.footer, "lab rows (a)-(k): skipped: "+out.Skipped)
		case out.Fatal != "":
			t.footer = append(t.footer, "lab rows: the lab failed: "+out.Fatal)
			failed = true
		}
	}

	fmt.Printf("plurenet bench: one run, %s, %s/%s, %d CPUs, %s\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	fmt.Println("ratios divide a row's throughput by a baseline measured in this run (/PIPE: loopback rows; /ANCHOR: the Tailscale row above it; /VETH, /WG-GO: lab rows)")
	if !*noLab {
		fmt.Printf("lab throughput: the median of %d iperf3 runs of %s each (-iperf-runs, -duration)\n", *iperfRuns, *duration)
	}
	if !*labOnly {
		fmt.Printf("embedded nodes: the median of %d transfers each, tsnet's and plurenet's in turn (-embedded-runs)\n", *embeddedRuns)
	}
	fmt.Println()
	if err := t.write(os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "plurenet-bench: %v\n", err)
		return 1
	}
	for _, r := range t.rows {
		if r.err != nil {
			failed = true
			fmt.Fprintf(os.Stderr, "plurenet-bench: %s %s: %v\n", r.section, r.label, r.err)
		}
	}
	if failed {
		return 1
	}
	return 0
}
