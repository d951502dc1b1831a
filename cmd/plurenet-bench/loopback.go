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

// goBenchCount is how many times each relay Go benchmark runs; its row
// is the median run. On a shared 2-core machine single runs of the relay
// benchmarks spread by ±30%.
const goBenchCount = 3

// relayGoBenchmarks runs the relay client's Go benchmarks (relay forwarding
// between two clients over ws:// and over wss://, and a plain TCP pipe for
// the baseline) in repo and returns their rows. The wss:// row's note
// divides it by the ws:// row.
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
	cmd := exec.CommandContext(ctx, goCommand(), "test", "-run", "^$", "-count", fmt.Sprint(goBenchCount),
		"-bench", "^(BenchmarkRelayThroughput|BenchmarkRelayThroughputTLS|BenchmarkTCPPipe)$", "-benchtime", benchtime.String(),
		"./transports/relay")
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fail(fmt.Errorf("go test -bench ./transports/relay: %w: %s", err, lastLines(string(out), 5)))
	}
	res, err := parseGoBench(string(out))
	if err != nil {
		return fail(err)
	}
	names := []string{"BenchmarkTCPPipe", "BenchmarkRelayThroughput", "BenchmarkRelayThroughputTLS"}
	for i, r := range rows {
		b, ok := res[names[i]]
		switch {
		case !ok:
			r.err = fmt.Errorf("%s: not in the go test output", names[i])
		case b.MBPerSec == 0:
			r.err = fmt.Errorf("%s: no MB/s figure", names[i])
		default:
			r.bps = b.MBPerSec * 8e6
		}
		if i > 0 {
			r.note = fmt.Sprintf("1400-byte frames, median of %d", goBenchCount)
			if b.CPUPerGB > 0 {
				r.note += fmt.Sprintf(", CPU %.1f s per GB (relay and both clients)", b.CPUPerGB)
			}
		}
	}
	if relay.err == nil && relayTLS.err == nil {
		relayTLS.note += fmt.Sprintf("; %.2fx ws://", relayTLS.bps/relay.bps)
	}
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
