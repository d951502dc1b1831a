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

// relayGoBenchmarks runs the relay client's Go benchmarks (relay forwarding
// between two clients, and a plain TCP pipe for the baseline) in repo and
// returns their rows.
func relayGoBenchmarks(ctx context.Context, repo string, benchtime time.Duration) (pipe, relay *row) {
	pipe = &row{section: sectionLoopback, label: "TCP pipe, 1400-byte writes (go bench)"}
	relay = &row{section: sectionLoopback, label: "relay, client to client (go bench)", note: "1400-byte frames"}
	ctx, cancel := context.WithTimeout(ctx, goBenchWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, goCommand(), "test", "-run", "^$", "-count", "1",
		"-bench", "^(BenchmarkRelayThroughput|BenchmarkTCPPipe)$", "-benchtime", benchtime.String(),
		"./transports/relay")
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	if err != nil {
		err = fmt.Errorf("go test -bench ./transports/relay: %w: %s", err, lastLines(string(out), 5))
		pipe.err, relay.err = err, err
		return pipe, relay
	}
	res, err := parseGoBench(string(out))
	if err != nil {
		pipe.err, relay.err = err, err
		return pipe, relay
	}
	for _, x := range []struct {
		r    *row
		name string
	}{{pipe, "BenchmarkTCPPipe"}, {relay, "BenchmarkRelayThroughput"}} {
		b, ok := res[x.name]
		switch {
		case !ok:
			x.r.err = fmt.Errorf("%s: not in the go test output", x.name)
		case b.MBPerSec == 0:
			x.r.err = fmt.Errorf("%s: no MB/s figure", x.name)
		default:
			x.r.bps = b.MBPerSec * 8e6
		}
	}
	return pipe, relay
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
