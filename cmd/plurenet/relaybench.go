package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/relayserver"
	"github.com/plures/plurenet/transports/relay"
)

// Bounds of relay-bench: it is a load generator, so every knob is capped.
const (
	benchMaxMembers  = 200000
	benchMaxDuration = 10 * time.Minute
	// benchFDSlack is file descriptors beyond one per member: the listener,
	// the worker pipes, the Go runtime's own.
	benchFDSlack = 256
)

func init() {
	register(command{name: "relay-bench", summary: "load-test a relay: N members, memory per member, throughput, latency", run: runRelayBench})
}

func runRelayBench(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("relay-bench")
	relayURL := fs.String("relay", "", "relay `URL` (ws:// or wss://) to load; empty starts an in-process relay on 127.0.0.1")
	members := fs.Int("members", 1000, "WebSocket members to connect (each one connection)")
	pairs := fs.Int("pairs", 10, "member pairs that send traffic after all are connected (0: idle only)")
	duration := fs.Duration("duration", 10*time.Second, "how long the pairs send")
	size := fs.Int("size", 1024, "payload `bytes` per traffic frame")
	window := fs.Int("window", 64, "frames each pair may have in flight")
	inproc := fs.Bool("in-process-clients", false, "run the members in this process even with an in-process relay (memory per member then includes the clients)")
	memprofile := fs.String("memprofile", "", "with an in-process relay: write the relay process's heap profile to `file` once the members are connected, and its goroutine profile to file.goroutine")
	worker := fs.Bool("worker", false, "internal: be the members' process of an in-process-relay run")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *members < 1 || *members > benchMaxMembers:
		return usageErrorf("--members must be 1..%d", benchMaxMembers)
	case *pairs < 0 || 2**pairs > *members:
		return usageErrorf("--pairs must be 0..members/2")
	case *duration < 0 || *duration > benchMaxDuration:
		return usageErrorf("--duration must be 0..%v", benchMaxDuration)
	case *size < benchStampSize || *size > relayproto.MaxPayload:
		return usageErrorf("--size must be %d..%d", benchStampSize, relayproto.MaxPayload)
	case *window < 1 || *window > 4096:
		return usageErrorf("--window must be 1..4096")
	case *worker && *relayURL == "":
		return usageErrorf("--worker needs --relay")
	case *memprofile != "" && *relayURL != "":
		return usageErrorf("--memprofile profiles an in-process relay: leave out --relay")
	}
	p := benchParams{URL: *relayURL, Members: *members, Pairs: *pairs, Duration: *duration, Size: *size, Window: *window}
	if p.URL != "" {
		u, err := relay.ParseURL(p.URL)
		if err != nil {
			return usageErrorf("--relay: %v", err)
		}
		p.URL = u.String()
	}
	if *worker {
		return benchWorker(ctx, p, stdout)
	}
	before, limit, err := raiseFDLimit(uint64(p.Members) + benchFDSlack)
	if err != nil {
		return err
	}
	if limit > before {
		fmt.Fprintf(stdout, "relay-bench: raised the open-file limit from %d to %d (one socket per member in each process)\n", before, limit)
	}
	if p.URL != "" {
		return benchExternal(ctx, p, stdout)
	}
	return benchInProcess(ctx, p, *inproc, *memprofile, stdout)
}

// benchWorker is the members' process: it connects, prints a "connected"
// line, waits for "go" on stdin, runs the traffic and prints the result.
func benchWorker(ctx context.Context, p benchParams, stdout io.Writer) error {
	if _, _, err := raiseFDLimit(uint64(p.Members) + benchFDSlack); err != nil {
		return err
	}
	in := bufio.NewReader(os.Stdin)
	res, err := runMembers(ctx, p, func(r benchResult) error {
		b, _ := json.Marshal(r)
		fmt.Fprintf(stdout, "connected %s\n", b)
		line, err := in.ReadString('\n')
		if err != nil || strings.TrimSpace(line) != "go" {
			return fmt.Errorf("worker: expected go from the bench, got %q: %w", line, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	b, _ := json.Marshal(res)
	fmt.Fprintf(stdout, "result %s\n", b)
	return nil
}

// benchExternal loads a relay somewhere else: only the client side is seen.
func benchExternal(ctx context.Context, p benchParams, stdout io.Writer) error {
	fmt.Fprintf(stdout, "relay-bench: %d members against %s\n", p.Members, p.URL)
	res, err := runMembers(ctx, p, func(benchResult) error { return nil })
	if err != nil {
		return err
	}
	report(stdout, p, res, "the relay is external: read its memory from its metrics listener, --metrics-listen (go_memstats_heap_inuse_bytes, go_memstats_stack_inuse_bytes)")
	return nil
}

// benchInProcess starts a relay in this process and, unless inproc, the
// members in a child process, so that this process's memory is the relay's.
func benchInProcess(ctx context.Context, p benchParams, inproc bool, memprofile string, stdout io.Writer) error {
	base := heapStack()
	srv, err := relayserver.New(relayserver.Config{
		Logger: slog.New(slog.DiscardHandler),
		// Every member comes from 127.0.0.1: the per-address limits
		// would refuse them. MaxConns is raised to the run's size.
		MaxConnsPerIP:      relayserver.Unlimited,
		HandshakeRatePerIP: relayserver.Unlimited,
		MaxConns:           max(p.Members, relayserver.DefaultMaxConns),
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening on 127.0.0.1: %w", err)
	}
	serveCtx, stopServe := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx, ln, "", "") }()
	defer func() {
		stopServe()
		<-served
	}()
	p.URL = "ws://" + ln.Addr().String() + relayproto.Path
	fmt.Fprintf(stdout, "relay-bench: in-process relay at %s, %d members (%s)\n", p.URL, p.Members,
		map[bool]string{true: "clients in this process", false: "clients in a child process"}[inproc])

	var relayMem memUse
	measure := func(r benchResult) error {
		if st := srv.Stats(); st.Connections < r.Connected {
			return fmt.Errorf("relay holds %d connections, members report %d", st.Connections, r.Connected)
		}
		relayMem = heapStack().since(base)
		if memprofile != "" {
			return writeProfiles(memprofile)
		}
		return nil
	}
	var res benchResult
	if inproc {
		res, err = runMembers(ctx, p, measure)
	} else {
		res, err = runWorker(ctx, p, measure)
	}
	if err != nil {
		return err
	}
	perMember := func(n uint64) float64 { return float64(n) / 1024 / float64(max(res.Connected, 1)) }
	note := fmt.Sprintf("relay heap+stack for %d connections: %.1f MiB = %.1f KiB per member (heap %.1f, stacks %.1f; measured in the relay's own process)",
		res.Connected, float64(relayMem.total())/(1<<20), perMember(relayMem.total()), perMember(relayMem.heap), perMember(relayMem.stack))
	if inproc {
		note = fmt.Sprintf("relay and clients share this process: %.1f MiB = %.1f KiB per member covers both",
			float64(relayMem.total())/(1<<20), perMember(relayMem.total()))
	}
	report(stdout, p, res, note)
	return nil
}

// runWorker runs the members as "plurenet relay-bench --worker" and relays
// its two reports.
func runWorker(ctx context.Context, p benchParams, connected func(benchResult) error) (benchResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return benchResult{}, fmt.Errorf("finding this program to run the members: %w", err)
	}
	cmd := exec.CommandContext(ctx, exe, "relay-bench", "--worker", "--relay", p.URL,
		"--members", strconv.Itoa(p.Members), "--pairs", strconv.Itoa(p.Pairs),
		"--duration", p.Duration.String(), "--size", strconv.Itoa(p.Size), "--window", strconv.Itoa(p.Window))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return benchResult{}, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return benchResult{}, err
	}
	if err := cmd.Start(); err != nil {
		return benchResult{}, fmt.Errorf("starting the members' process: %w", err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	sc := bufio.NewScanner(out)
	var res benchResult
	for sc.Scan() {
		kind, body, _ := strings.Cut(sc.Text(), " ")
		switch kind {
		case "connected":
			var r benchResult
			if err := json.Unmarshal([]byte(body), &r); err != nil {
				return res, fmt.Errorf("members' process: %w", err)
			}
			if err := connected(r); err != nil {
				return res, err
			}
			if _, err := io.WriteString(stdin, "go\n"); err != nil {
				return res, fmt.Errorf("members' process: %w", err)
			}
		case "result":
			if err := json.Unmarshal([]byte(body), &res); err != nil {
				return res, fmt.Errorf("members' process: %w", err)
			}
			return res, nil
		}
	}
	return res, errors.New("the members' process ended without a result (see its errors above)")
}

func report(w io.Writer, p benchParams, r benchResult, memNote string) {
	fmt.Fprintf(w, "connections held:   %d of %d (connected in %.1f s)\n", r.Connected, p.Members, r.ConnectSeconds)
	fmt.Fprintf(w, "memory:             %s\n", memNote)
	fmt.Fprintf(w, "client side:        %.1f KiB heap+stack per member\n", float64(r.ClientHeapStack)/1024/float64(max(r.Connected, 1)))
	if p.Pairs == 0 || p.Duration == 0 {
		fmt.Fprintln(w, "traffic:            none (--pairs 0 or --duration 0)")
		return
	}
	secs := max(r.TrafficSeconds, 1e-9)
	fmt.Fprintf(w, "traffic:            %d pairs, %d-byte payloads, window %d, %.1f s\n", p.Pairs, p.Size, p.Window, r.TrafficSeconds)
	fmt.Fprintf(w, "forwarded:          %d of %d frames = %.0f frames/s, %.1f MB/s of payload\n",
		r.Received, r.Sent, float64(r.Received)/secs, float64(r.Received)*float64(p.Size)/secs/1e6)
	fmt.Fprintf(w, "delivery latency:   p50 %.0f µs, p99 %.0f µs, max %.0f µs (sender to receiver, both on this machine)\n",
		r.P50Micros, r.P99Micros, r.MaxMicros)
}

// writeProfiles writes this process's heap profile to file and its
// goroutine profile to file.goroutine (make loadtest-profile).
func writeProfiles(file string) error {
	for _, p := range []struct{ name, file string }{{"heap", file}, {"goroutine", file + ".goroutine"}} {
		f, err := os.Create(p.file)
		if err != nil {
			return fmt.Errorf("relay-bench: %w", err)
		}
		err = pprof.Lookup(p.name).WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("relay-bench: writing the %s profile: %w", p.name, err)
		}
	}
	return nil
}
