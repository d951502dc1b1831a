//go:build linux

package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/overlay"
	"github.com/plures/plurenet/proxy/portfwd"
	"github.com/plures/plurenet/relayserver"
)

// Two embedded nodes in one process, the Go API's use: the "embedded" and
// "forward" workers. Each runs in a child process of its own (plurenet-bench
// -worker NAME), so that its peak RSS and CPU time are its own, as those of
// the tsnet anchor (bench/tsnet) are.
const (
	// embeddedBytes is what one embedded run sends: 256 MiB, as the issue
	// that set the tsnet anchor measured.
	embeddedBytes = 256 << 20
	// loopbackDirectWait bounds how long two loopback nodes may take to move from
	// the relay to the direct path.
	loopbackDirectWait = 30 * time.Second
	// workerWait bounds one worker run from start to result.
	workerWait = 3 * time.Minute
)

// workerResult is what a worker (or the tsnet anchor, bench/tsnet) prints as
// one JSON object.
type workerResult struct {
	Bytes       int64   `json:"bytes"`
	Seconds     float64 `json:"seconds"`
	CPUSeconds  float64 `json:"cpu_seconds"`
	FirstByteMS float64 `json:"first_byte_ms"`
	PeakRSS     int64   `json:"peak_rss"`
	Path        string  `json:"path"`
}

func (r workerResult) bps() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / r.Seconds
}

// fill sets a row's throughput, RSS and note from a worker's result.
func (r workerResult) fill(row *row, name string) {
	row.bps = r.bps()
	row.rss = []procRSS{{name: name, bytes: r.PeakRSS}}
	row.note = fmt.Sprintf("path %s; CPU %.2f s per %d MiB; first byte %.0f ms",
		r.Path, r.CPUSeconds, r.Bytes>>20, r.FirstByteMS)
}

// workerOptions are the flags of a worker run.
type workerOptions struct {
	bytes      int64
	cpuProfile string
	memProfile string
}

// runWorker runs the named worker in this process and prints its result.
func runWorker(name string, o workerOptions) int {
	var run func(context.Context, *loopbackMesh, int64) (workerResult, error)
	switch name {
	case "embedded":
		run = embeddedTransfer
	case "forward":
		run = forwardTransfer
	default:
		fmt.Fprintf(os.Stderr, "plurenet-bench: -worker %q: want embedded or forward\n", name)
		return 2
	}
	if o.bytes < 1 {
		fmt.Fprintln(os.Stderr, "plurenet-bench: -bytes must be positive")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), workerWait)
	defer cancel()
	res, err := func() (workerResult, error) {
		start := time.Now()
		m, err := startLoopbackMesh(ctx)
		if err != nil {
			return workerResult{}, err
		}
		defer m.close()
		first, err := m.firstByte(ctx)
		if err != nil {
			return workerResult{}, err
		}
		path, err := m.waitDirect(ctx)
		if err != nil {
			return workerResult{}, err
		}
		stop, err := startProfiles(o)
		if err != nil {
			return workerResult{}, err
		}
		// The peak RSS of the transfer, not of the start (Argon2id).
		if err := resetPeakRSS(os.Getpid()); err != nil {
			return workerResult{}, err
		}
		cpu0 := cpuTime()
		res, err := run(ctx, m, o.bytes)
		res.CPUSeconds = (cpuTime() - cpu0).Seconds()
		if perr := stop(); err == nil {
			err = perr
		}
		res.FirstByteMS = float64(first.Sub(start)) / float64(time.Millisecond)
		res.Path = path
		if err == nil {
			res.PeakRSS, err = peakRSS(os.Getpid())
		}
		return res, err
	}()
	if err != nil {
		fmt.Fprintf(os.Stderr, "plurenet-bench: worker %s: %v\n", name, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintf(os.Stderr, "plurenet-bench: %v\n", err)
		return 1
	}
	return 0
}

// peakHeapEvery is how often a profiled worker samples its live heap for
// the heap profile at the peak.
const peakHeapEvery = 100 * time.Millisecond

// startProfiles starts the CPU profile and returns what stops it and writes
// the allocation profile. With an allocation profile it also keeps, in
// memProfile+".peak", the heap profile taken when the heap in use was at
// its largest during the transfer: where the peak RSS goes.
func startProfiles(o workerOptions) (func() error, error) {
	var cpu *os.File
	peakDone := func() error { return nil }
	if o.memProfile != "" {
		stop := make(chan struct{})
		errc := make(chan error, 1)
		go func() { errc <- samplePeakHeap(o.memProfile+".peak", stop) }()
		peakDone = func() error {
			close(stop)
			return <-errc
		}
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, err
		}
		cpu = f
	}
	return func() error {
		if err := peakDone(); err != nil {
			return err
		}
		if cpu != nil {
			pprof.StopCPUProfile()
			if err := cpu.Close(); err != nil {
				return err
			}
		}
		if o.memProfile == "" {
			return nil
		}
		f, err := os.Create(o.memProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		return pprof.Lookup("allocs").WriteTo(f, 0)
	}, nil
}

// samplePeakHeap writes a heap profile to path whenever the heap in use
// (runtime/metrics: live after the last GC) is larger than at any
// earlier sample, until stop closes.
func samplePeakHeap(path string, stop <-chan struct{}) error {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	var peak uint64
	tick := time.NewTicker(peakHeapEvery)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return nil
		case <-tick.C:
		}
		metrics.Read(sample)
		if v := sample[0].Value.Uint64(); v > peak {
			peak = v
			var buf bytes.Buffer
			if err := pprof.Lookup("heap").WriteTo(&buf, 0); err != nil {
				return err
			}
			if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
				return err
			}
		}
	}
}

// loopbackMesh is an in-process relay on 127.0.0.1 and two userspace nodes,
// tx and rx, that use it (auto transport: the relay at once, direct UDP on
// loopback when ICE succeeds). rx listens on overlayPort: it echoes on its
// first connection and counts what arrives on the second.
type loopbackMesh struct {
	srv    *relayserver.Server
	hs     *http.Server
	served chan struct{}
	dir    string
	rx, tx *overlay.Node
	ln     net.Listener
	addr   string // rx's overlayPort on its overlay IPv4
	probe  net.Conn
	result chan counted
}

type counted struct {
	n       int64
	elapsed time.Duration
	err     error
}

func startLoopbackMesh(ctx context.Context) (_ *loopbackMesh, err error) {
	m := &loopbackMesh{served: make(chan struct{}), result: make(chan counted, 1)}
	defer func() {
		if err != nil {
			m.close()
		}
	}()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if m.srv, err = relayserver.New(relayserver.Config{Logger: log, RateBytesPerSec: relayserver.Unlimited}); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m.hs = &http.Server{Handler: m.srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(m.served)
		_ = m.hs.Serve(ln) // http.ErrServerClosed after Close
	}()
	if m.dir, err = os.MkdirTemp("", "plurenet-bench-"); err != nil {
		return nil, err
	}
	// A generated secret (plurenet key's), as a mesh should use: a chosen
	// passphrase is stretched with Argon2id at each start (~0.2 s per node
	// here, on purpose), which would hide the time to meet in the setup row.
	secret, err := mesh.GenerateSecret()
	if err != nil {
		return nil, err
	}
	mk := func(name string) (*overlay.Node, error) {
		return overlay.New(overlay.Config{
			StateDir: filepath.Join(m.dir, name),
			Topic:    "plurenet-bench",
			Secret:   secret,
			Name:     name,
			Relays:   []string{"ws://" + ln.Addr().String()},
			Logger:   log.With("node", name),
		})
	}
	if m.rx, err = mk("rx"); err != nil {
		return nil, err
	}
	if m.tx, err = mk("tx"); err != nil {
		return nil, err
	}
	if m.ln, err = m.rx.Listen("tcp", fmt.Sprintf(":%d", overlayPort)); err != nil {
		return nil, err
	}
	go m.receive(ctx)
	ip, err := m.tx.WaitMember(ctx, "rx")
	if err != nil {
		return nil, err
	}
	m.addr = net.JoinHostPort(ip.String(), fmt.Sprint(overlayPort))
	return m, nil
}

// receive is rx's side: an echo on the first connection, a counter on the
// second, whose count goes to m.result.
func (m *loopbackMesh) receive(ctx context.Context) {
	c, err := m.ln.Accept()
	if err != nil {
		m.result <- counted{err: err}
		return
	}
	_, err = io.Copy(c, c)
	c.Close()
	if err != nil {
		m.result <- counted{err: err}
		return
	}
	c, err = m.ln.Accept()
	if err != nil {
		m.result <- counted{err: err}
		return
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	t0 := time.Now()
	n, err := io.Copy(io.Discard, c)
	m.result <- counted{n: n, elapsed: time.Since(t0), err: err}
}

// firstByte dials rx and waits for the echo of one byte: the moment the
// mesh carries traffic.
func (m *loopbackMesh) firstByte(ctx context.Context) (time.Time, error) {
	c, err := m.tx.Dial(ctx, "tcp", m.addr)
	if err != nil {
		return time.Time{}, fmt.Errorf("tx dialing rx at %s: %w", m.addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	m.probe = c
	if err := m.echo(); err != nil {
		return time.Time{}, fmt.Errorf("first byte: %w", err)
	}
	return time.Now(), nil
}

func (m *loopbackMesh) echo() error {
	var b [1]byte
	if _, err := m.probe.Write(b[:]); err != nil {
		return err
	}
	_, err := io.ReadFull(m.probe, b[:])
	return err
}

// waitDirect echoes bytes until tx sends to rx on the direct path, then ends
// the probe connection.
func (m *loopbackMesh) waitDirect(ctx context.Context) (string, error) {
	deadline := time.Now().Add(loopbackDirectWait)
	for {
		if err := m.echo(); err != nil {
			return "", fmt.Errorf("echo while waiting for the direct path: %w", err)
		}
		for _, mem := range m.tx.Status().Members {
			if mem.Name == "rx" && strings.HasPrefix(mem.Path, "direct") {
				m.probe.Close()
				return mem.Path, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("tx did not move to the direct path within %v", loopbackDirectWait)
		}
		time.Sleep(poll)
	}
}

// send writes n bytes to c in writeChunk writes and closes it.
func send(c net.Conn, n int64) error {
	buf := make([]byte, writeChunk)
	for left := n; left > 0; {
		w := min(left, int64(len(buf)))
		if _, err := c.Write(buf[:w]); err != nil {
			c.Close()
			return fmt.Errorf("sending: %w", err)
		}
		left -= w
	}
	return c.Close()
}

// received waits for rx's count of the second connection.
func (m *loopbackMesh) received(n int64) (workerResult, error) {
	r := <-m.result
	m.result <- r // for close
	if r.err != nil && !errors.Is(r.err, io.EOF) {
		return workerResult{}, fmt.Errorf("receiving: %w", r.err)
	}
	if r.n != n {
		return workerResult{}, fmt.Errorf("receiver got %d bytes, want %d", r.n, n)
	}
	return workerResult{Bytes: r.n, Seconds: r.elapsed.Seconds()}, nil
}

func (m *loopbackMesh) close() {
	if m.ln != nil {
		m.ln.Close()
		<-m.result
	}
	for _, n := range []*overlay.Node{m.tx, m.rx} {
		if n != nil {
			n.Close()
		}
	}
	if m.hs != nil {
		m.hs.Close()
		<-m.served
	}
	if m.srv != nil {
		m.srv.Close()
	}
	if m.dir != "" {
		os.RemoveAll(m.dir)
	}
}

// embeddedTransfer sends n bytes from tx to rx over one overlay TCP
// connection: the Go API's path.
func embeddedTransfer(ctx context.Context, m *loopbackMesh, n int64) (workerResult, error) {
	c, err := m.tx.Dial(ctx, "tcp", m.addr)
	if err != nil {
		return workerResult{}, fmt.Errorf("tx dialing rx at %s: %w", m.addr, err)
	}
	if err := send(c, n); err != nil {
		return workerResult{}, err
	}
	return m.received(n)
}

// forwardTransfer sends n bytes through the path of "plurenet up --forward"
// on tx and "--expose" on rx, as the lab's row (d) does with iperf3 but in
// one process: a local TCP client, tx's forward listener, the overlay, rx's
// exposed port, a local TCP sink.
func forwardTransfer(ctx context.Context, m *loopbackMesh, n int64) (workerResult, error) {
	// The sink stands for the exposed service.
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return workerResult{}, err
	}
	defer sink.Close()
	fwd, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return workerResult{}, err
	}
	// rx's overlayPort is the counter of receive; expose the next port.
	exposed, err := m.rx.Listen("tcp", fmt.Sprintf(":%d", overlayPort+1))
	if err != nil {
		fwd.Close()
		return workerResult{}, err
	}
	host, _, _ := net.SplitHostPort(m.addr)
	target := net.JoinHostPort(host, fmt.Sprint(overlayPort+1))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	done := make(chan error, 2)
	go func() {
		done <- portfwd.Forward(ctx, fwd, func(ctx context.Context) (net.Conn, error) {
			return m.tx.Dial(ctx, "tcp", target)
		}, log)
	}()
	go func() {
		done <- portfwd.Forward(ctx, exposed, func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", sink.Addr().String())
		}, log)
	}()
	defer func() {
		cancel()
		<-done
		<-done
	}()
	got := make(chan counted, 1)
	go func() {
		c, err := sink.Accept()
		if err != nil {
			got <- counted{err: err}
			return
		}
		defer c.Close()
		t0 := time.Now()
		k, err := io.Copy(io.Discard, c)
		got <- counted{n: k, elapsed: time.Since(t0), err: err}
	}()
	c, err := net.Dial("tcp", fwd.Addr().String())
	if err != nil {
		return workerResult{}, err
	}
	if err := send(c, n); err != nil {
		return workerResult{}, err
	}
	r := <-got
	if r.err != nil {
		return workerResult{}, fmt.Errorf("sink: %w", r.err)
	}
	if r.n != n {
		return workerResult{}, fmt.Errorf("sink got %d bytes, want %d", r.n, n)
	}
	return workerResult{Bytes: r.n, Seconds: r.elapsed.Seconds()}, nil
}

// runWorkerProcess runs "plurenet-bench -worker name" as a child and
// returns its result.
func runWorkerProcess(ctx context.Context, name string, bytes int64) (workerResult, error) {
	var res workerResult
	self, err := os.Executable()
	if err != nil {
		return res, err
	}
	err = runJSONInto(ctx, exec.CommandContext(ctx, self, "-worker", name, "-bytes", fmt.Sprint(bytes)), &res)
	return res, err
}

// runJSONInto runs cmd and decodes the one JSON object it prints into v.
func runJSONInto(ctx context.Context, cmd *exec.Cmd, v any) error {
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", filepath.Base(cmd.Path), err, lastLines(stderr.String(), 5))
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("%s printed %q: %w", filepath.Base(cmd.Path), lastLines(string(out), 3), err)
	}
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// embeddedRows adds the embedded-node rows: tsnet (when bench/tsnet was
// built and we are root, for its closed network namespace), plurenet beside
// it, plurenet through --forward/--expose, and the set-up time. Each row is
// the median of runs transfers, tsnet's and plurenet's taken in turn: one
// transfer of the same binary takes either ~0.5 s or ~0.85 s on the 2-core
// bench machine, so one sample decides little.
func embeddedRows(ctx context.Context, t *table, tsnetpair, isolate string, runs int) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(3*runs)*workerWait)
	defer cancel()
	var anchor *row
	var tsnet func() (workerResult, error)
	switch {
	case tsnetpair == "" || isolate == "":
		t.footer = append(t.footer, "tsnet anchor: not built (scripts/bench.sh builds bench/tsnet; give -tsnetpair and -isolate)")
	case os.Geteuid() != 0:
		t.footer = append(t.footer, "tsnet anchor: needs root (it runs in a network namespace of its own, so tsnet cannot reach out)")
	default:
		anchor = t.add(&row{section: sectionLoopback, label: "2 embedded nodes, 256 MiB TCP: tsnet v1.102.5"})
		tsnet = func() (workerResult, error) {
			var res workerResult
			err := runJSONInto(ctx, exec.CommandContext(ctx, isolate, tsnetpair, "-bytes", fmt.Sprint(embeddedBytes)), &res)
			return res, err
		}
	}
	emb := t.add(&row{section: sectionLoopback, label: "2 embedded nodes, 256 MiB TCP: plurenet", anchor: anchor})
	setup := &row{section: sectionLoopback, label: "setup: 2 nodes started to first TCP byte"}
	fwd := t.add(&row{section: sectionLoopback, label: "2 embedded nodes, 256 MiB TCP via --forward/--expose: plurenet"})
	var tsnetRes, embRes, fwdRes []workerResult
	var tsnetErr, embErr, fwdErr error
	for range runs {
		if tsnet != nil && tsnetErr == nil {
			tsnetRes, tsnetErr = appendRun(tsnetRes, tsnet)
		}
		if embErr == nil {
			embRes, embErr = appendRun(embRes, func() (workerResult, error) { return runWorkerProcess(ctx, "embedded", embeddedBytes) })
		}
		if fwdErr == nil {
			fwdRes, fwdErr = appendRun(fwdRes, func() (workerResult, error) { return runWorkerProcess(ctx, "forward", embeddedBytes) })
		}
	}
	if anchor != nil {
		fillMedian(anchor, "tsnetpair", tsnetRes, tsnetErr)
	}
	fillMedian(emb, "plurenet-bench", embRes, embErr)
	fillMedian(fwd, "plurenet-bench", fwdRes, fwdErr)
	if embErr != nil {
		setup.err = embErr
	} else {
		setup.note = fmt.Sprintf("%.0f ms (median of %d)", medianResult(embRes, func(r workerResult) float64 { return r.FirstByteMS }).FirstByteMS, len(embRes))
	}
	t.add(setup)
}

// appendRun runs one transfer and appends its result.
func appendRun(rs []workerResult, run func() (workerResult, error)) ([]workerResult, error) {
	r, err := run()
	if err != nil {
		return rs, err
	}
	return append(rs, r), nil
}

// fillMedian fills row from the median of rs by throughput, or with err.
func fillMedian(row *row, name string, rs []workerResult, err error) {
	if err != nil {
		row.err = err
		return
	}
	medianResult(rs, workerResult.bps).fill(row, name)
	row.note += fmt.Sprintf("; median of %d", len(rs))
}

// medianResult returns the result in the middle of rs by key (the upper
// one of an even count). rs must not be empty.
func medianResult(rs []workerResult, key func(workerResult) float64) workerResult {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b workerResult) int { return cmp.Compare(key(a), key(b)) })
	return s[len(s)/2]
}
