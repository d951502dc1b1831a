//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/plures/plurenet/overlay"
	"github.com/plures/plurenet/relayserver"
)

// Bounds of the loopback measurements. They only keep a broken run from
// hanging.
const (
	// goBenchWait bounds "go test -bench" including its compile.
	goBenchWait = 10 * time.Minute
	// overlayWait bounds two in-process nodes finding each other and
	// exchanging a first byte.
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

// overlayLoopback starts an in-process relay and two userspace nodes on
// 127.0.0.1, measures the time from starting both nodes to the first TCP
// byte between their overlay IPs, then TCP throughput for d.
func overlayLoopback(ctx context.Context, d time.Duration) (setup, tput *row) {
	setup = &row{section: sectionLoopback, label: "setup: 2 nodes started to first TCP byte"}
	tput = &row{section: sectionLoopback, label: "2 userspace nodes via a relay, TCP", note: "in-process, gVisor netstack"}
	first, bps, err := runOverlayLoopback(ctx, d)
	if err != nil {
		setup.err, tput.err = err, err
		return setup, tput
	}
	setup.note = first.Round(time.Millisecond).String()
	tput.bps = bps
	return setup, tput
}

func runOverlayLoopback(ctx context.Context, d time.Duration) (first time.Duration, bps float64, err error) {
	ctx, cancel := context.WithTimeout(ctx, overlayWait+d)
	defer cancel()
	log := benchLogger()
	relayURL, stop, err := startLoopbackRelay(log)
	if err != nil {
		return 0, 0, err
	}
	defer stop()
	dir, err := os.MkdirTemp("", "plurenet-bench-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)

	start := time.Now()
	mk := func(name string) (*overlay.Node, error) {
		return overlay.New(overlay.Config{
			StateDir: filepath.Join(dir, name),
			Topic:    "plurenet-bench",
			Secret:   "bench secret, loopback only, 0123456789",
			Name:     name,
			Relays:   []string{relayURL},
			Logger:   log.With("node", name),
		})
	}
	rx, err := mk("rx")
	if err != nil {
		return 0, 0, err
	}
	defer rx.Close()
	tx, err := mk("tx")
	if err != nil {
		return 0, 0, err
	}
	defer tx.Close()

	l, err := rx.Listen("tcp", fmt.Sprintf(":%d", overlayPort))
	if err != nil {
		return 0, 0, err
	}
	defer l.Close()
	// The receiver answers its first connection with one byte (the
	// set-up probe) and counts what arrives on its second.
	type counted struct {
		n       int64
		elapsed time.Duration
		err     error
	}
	result := make(chan counted, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			result <- counted{err: err}
			return
		}
		_, err = c.Write([]byte{1})
		c.Close()
		if err != nil {
			result <- counted{err: err}
			return
		}
		c, err = l.Accept()
		if err != nil {
			result <- counted{err: err}
			return
		}
		defer c.Close()
		if dl, ok := ctx.Deadline(); ok {
			c.SetDeadline(dl)
		}
		t0 := time.Now()
		n, err := io.Copy(io.Discard, c)
		result <- counted{n: n, elapsed: time.Since(t0), err: err}
	}()
	// Whatever happens below, the receiver goroutine ends: closing the
	// listener ends Accept, the deadline ends the copy.
	defer func() {
		l.Close()
		<-result
	}()

	ip, err := tx.WaitMember(ctx, "rx")
	if err != nil {
		return 0, 0, err
	}
	addr := net.JoinHostPort(ip.String(), fmt.Sprint(overlayPort))
	c, err := tx.Dial(ctx, "tcp", addr)
	if err != nil {
		return 0, 0, fmt.Errorf("tx dialing rx at %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	var b [1]byte
	_, err = io.ReadFull(c, b[:])
	c.Close()
	if err != nil {
		return 0, 0, fmt.Errorf("reading the first byte: %w", err)
	}
	first = time.Since(start)

	c, err = tx.Dial(ctx, "tcp", addr)
	if err != nil {
		return 0, 0, fmt.Errorf("tx dialing rx at %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	buf := make([]byte, writeChunk)
	for end := time.Now().Add(d); time.Now().Before(end); {
		if _, err := c.Write(buf); err != nil {
			c.Close()
			return 0, 0, fmt.Errorf("sending over the overlay: %w", err)
		}
	}
	c.Close()
	res := <-result
	result <- res // for the deferred wait
	if res.err != nil && !errors.Is(res.err, io.EOF) {
		return 0, 0, fmt.Errorf("receiving over the overlay: %w", res.err)
	}
	if res.n == 0 || res.elapsed <= 0 {
		return 0, 0, errors.New("the receiver got nothing")
	}
	return first, float64(res.n) * 8 / res.elapsed.Seconds(), nil
}

func benchLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
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
