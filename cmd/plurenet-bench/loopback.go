//go:build linux

package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/plures/plurenet/relayserver"
)

// Bounds of the loopback measurements. They only keep a broken run from
// hanging.
const (
	// goBenchWait bounds "go test -bench" including its compile.
	goBenchWait = 10 * time.Minute
	// overlayWait bounds in-process nodes finding each other (the
	// revocation row).
	overlayWait = time.Minute
	// overlayPort is where the in-process receiver listens on its
	// overlay IP.
	overlayPort = 7000
	// writeChunk is the size of each write of the overlay throughput
	// sender: large enough that syscall-free userspace writes are not
	// the bottleneck.
	writeChunk = 64 << 10
)

// goBenchRounds is how many rounds of the relay Go benchmarks run. A round
// runs each benchmark once, ws:// and wss:// back to back in alternating
// order; a row is its benchmark's median round. On a shared 2-core machine
// single runs spread by ±30% and drift over a minute, so the wss:// ratio
// is the median of the rounds' own ratios: each compares two runs made
// seconds apart.
const goBenchRounds = 5

// Names of the relay Go benchmarks (transports/relay/bench_test.go).
const (
	benchPipe = "BenchmarkTCPPipe"
	benchWS   = "BenchmarkRelayThroughput"
	benchWSS  = "BenchmarkRelayThroughputTLS"
	relayPkg  = "transports/relay" // in the repository
)

// relayGoBenchmarks runs the relay client's Go benchmarks (relay forwarding
// between two clients over ws:// and over wss://, and a plain TCP pipe for
// the baseline) in repo and returns their rows. The wss:// row's note
// divides it by the ws:// row, round by round.
func relayGoBenchmarks(ctx context.Context, repo string, benchtime time.Duration) (pipe, relay, relayTLS *row) {
	pipe = &row{section: sectionLoopback, label: "TCP pipe, 1400-byte writes (go bench)"}
	relay = &row{section: sectionLoopback, label: "relay, client to client (go bench)"}
	relayTLS = &row{section: sectionLoopback, label: "relay over wss://, client to client (go bench)"}
	rows := []*row{pipe, relay, relayTLS}
	fail := func(err error) (*row, *row, *row) {
		for _, r := range rows {
			r.err = err
		}
		return pipe, relay, relayTLS
	}
	ctx, cancel := context.WithTimeout(ctx, goBenchWait)
	defer cancel()
	dir, err := os.MkdirTemp("", "plurenet-bench-go-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "relay.test")
	build := exec.CommandContext(ctx, goCommand(), "test", "-c", "-o", bin, "./"+relayPkg)
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("go test -c %s: %w: %s", relayPkg, err, lastLines(string(out), 5)))
	}
	runs := make(map[string][]goBenchResult)
	for round := range goBenchRounds {
		order := []string{benchPipe, benchWS, benchWSS}
		if round%2 == 1 {
			order = []string{benchPipe, benchWSS, benchWS}
		}
		for _, name := range order {
			cmd := exec.CommandContext(ctx, bin, "-test.run", "^$", "-test.bench", "^"+name+"$",
				"-test.benchtime", benchtime.String(), "-test.count", "1")
			cmd.Dir = filepath.Join(repo, relayPkg)
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fail(fmt.Errorf("%s -test.bench %s: %w: %s", relayPkg, name, err, lastLines(string(out), 5)))
			}
			res, err := parseGoBench(string(out))
			if err != nil {
				return fail(err)
			}
			b, ok := res[name]
			switch {
			case !ok:
				return fail(fmt.Errorf("%s: not in the go test output", name))
			case b.MBPerSec == 0:
				return fail(fmt.Errorf("%s: no MB/s figure", name))
			}
			runs[name] = append(runs[name], b)
		}
	}
	for i, name := range []string{benchPipe, benchWS, benchWSS} {
		r, b := rows[i], medianGoBench(runs[name])
		r.bps = b.MBPerSec * 8e6
		if i > 0 {
			r.note = fmt.Sprintf("1400-byte frames, median of %d rounds", goBenchRounds)
			if b.CPUPerGB > 0 {
				r.note += fmt.Sprintf(", CPU %.1f s per GB (relay and both clients)", b.CPUPerGB)
			}
		}
	}
	relayTLS.note += fmt.Sprintf("; %.2fx ws:// (median of the rounds' ratios)", pairedRatio(runs[benchWSS], runs[benchWS]))
	return pipe, relay, relayTLS
}

// startLoopbackRelay serves an in-process relay without a rate limit on
// 127.0.0.1 until stop.
func startLoopbackRelay(log *slog.Logger) (url string, stop func(), err error) {
	srv, err := relayserver.New(relayserver.Config{Logger: log, RateBytesPerSec: -1})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return "", nil, err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = hs.Serve(ln) // http.ErrServerClosed after Close
	}()
	return "ws://" + ln.Addr().String(), func() {
		hs.Close()
		<-served
		srv.Close()
	}, nil
}

// lastLines returns the last n lines of s, for error messages.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// goCommand is the go command: $GO (as in the Makefile) or go on the PATH.
func goCommand() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}
