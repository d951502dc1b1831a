//go:build linux

package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/transports/relay"
)

// Relay forwarding, client to client on loopback, beside Tailscale's DERP:
// a relay process (plurenet relay, or cmd/derper built by bench/derp) and
// two clients of the kind the product uses (plurenet's relay client; DERP's
// derphttp, in bench/derp's derpfwd). One client sends fwdFrame-byte frames
// as fast as its client takes them for the row's duration; the throughput
// is what the other client received (delivered, not sent), from the first
// send to the last frame. CPU is the relay process's own.
const (
	fwdFrame = 1400
	// fwdDrain is how long the receiver keeps counting after the sender
	// stops; derpfwd waits the same.
	fwdDrain = 500 * time.Millisecond
	// fwdBackoff is the sender's pause when the client's queue is full:
	// the client never blocks, so without it the sender would spin.
	fwdBackoff = 50 * time.Microsecond
)

// fwdResult is one forwarding run, as derpfwd prints it.
type fwdResult struct {
	Size      int     `json:"size"`
	Sent      uint64  `json:"sent"`
	Delivered uint64  `json:"delivered"`
	Seconds   float64 `json:"seconds"`
}

func (r fwdResult) bps() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.Delivered) * float64(r.Size) * 8 / r.Seconds
}

// fill sets a row from a run and the relay process's CPU time over it.
func (r fwdResult) fill(row *row, relayCPU time.Duration, rss []procRSS) {
	row.bps = r.bps()
	row.rss = rss
	lost := 0.0
	if r.Sent > 0 {
		lost = 100 * float64(r.Sent-min(r.Delivered, r.Sent)) / float64(r.Sent)
	}
	gb := float64(r.Delivered) * float64(r.Size) / 1e9
	perGB := "-"
	if gb > 0 {
		perGB = fmt.Sprintf("%.1f s", relayCPU.Seconds()/gb)
	}
	row.note = fmt.Sprintf("%d-byte frames, %.1f%% of sent not delivered, relay CPU %s per GB", r.Size, lost, perGB)
}

// relayProc is a relay process on 127.0.0.1.
type relayProc struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{}
}

// startRelayProc starts a relay command and waits until it prints ready;
// url is where its clients connect.
func startRelayProc(ctx context.Context, bin string, args []string, ready, url string) (*relayProc, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout // one stream to scan; derper logs to stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &relayProc{cmd: cmd, url: url, done: make(chan struct{})}
	found := make(chan bool, 1)
	var last lastLine
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			last.set(sc.Text())
			if !ok && strings.Contains(sc.Text(), ready) {
				ok = true
				found <- true
			}
		}
		if !ok {
			found <- false
		}
		cmd.Wait()
	}()
	select {
	case ok := <-found:
		if ok {
			return p, nil
		}
		p.stop()
		return nil, fmt.Errorf("%s exited before listening: %s", bin, last.get())
	case <-time.After(startWait):
		p.stop()
		return nil, fmt.Errorf("%s did not print %q within %v: %s", bin, ready, startWait, last.get())
	}
}

func (p *relayProc) stop() {
	p.cmd.Process.Kill()
	<-p.done
}

// lastLine keeps the last line a process printed, for errors.
type lastLine struct {
	mu sync.Mutex
	s  string
}

func (l *lastLine) set(s string) { l.mu.Lock(); l.s = s; l.mu.Unlock() }
func (l *lastLine) get() string  { l.mu.Lock(); defer l.mu.Unlock(); return l.s }

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// procCPU is a process's user+system CPU time from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; the fields after it are fixed.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	var ticks int64
	for _, s := range f[11:13] { // utime, stime (fields 14 and 15)
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += v
	}
	// USER_HZ is 100 on every Linux the lab runs on.
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// derpRow measures DERP: cmd/derper on a free loopback port and derpfwd.
func derpRow(ctx context.Context, derper, derpfwd string, d time.Duration) *row {
	r := &row{section: sectionLoopback, label: "relay fwd: Tailscale DERP (derper v1.104.7, derphttp)"}
	port, err := freePort()
	if err != nil {
		r.err = err
		return r
	}
	dir, err := os.MkdirTemp("", "plurenet-bench-derper-")
	if err != nil {
		r.err = err
		return r
	}
	defer os.RemoveAll(dir)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := startRelayProc(ctx, derper, []string{"-a", addr, "-http-port", "-1", "-stun=false", "-c", dir + "/derper.json"},
		"derper: serving on", "http://"+addr+"/derp")
	if err != nil {
		r.err = err
		return r
	}
	defer p.stop()
	r.err = p.measure(r, "derper", func() (fwdResult, error) {
		var res fwdResult
		err := runJSONInto(ctx, exec.CommandContext(ctx, derpfwd, "-url", p.url, "-size", fmt.Sprint(fwdFrame), "-duration", d.String()), &res)
		return res, err
	})
	return r
}

// measure runs one forwarding run through p and fills r with its result,
// p's CPU time over the run and its peak RSS.
func (p *relayProc) measure(r *row, name string, run func() (fwdResult, error)) error {
	pid := p.cmd.Process.Pid
	cpu0, err := procCPU(pid)
	if err != nil {
		return err
	}
	res, err := run()
	if err != nil {
		return err
	}
	cpu1, err := procCPU(pid)
	if err != nil {
		return err
	}
	rss, err := peakRSS(pid)
	if err != nil {
		return err
	}
	res.fill(r, cpu1-cpu0, []procRSS{{name: name, bytes: rss}})
	return nil
}

// plurenetRelayRow measures "plurenet relay" with extra flags, e.g. none
// (its defaults) or --rate 0.
func plurenetRelayRow(ctx context.Context, plurenet, label string, extra []string, d time.Duration) *row {
	r := &row{section: sectionLoopback, label: label}
	port, err := freePort()
	if err != nil {
		r.err = err
		return r
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := startRelayProc(ctx, plurenet, append([]string{"relay", "--listen", addr}, extra...),
		"plurenet relay listening on", "ws://"+addr)
	if err != nil {
		r.err = err
		return r
	}
	defer p.stop()
	r.err = p.measure(r, "relay", func() (fwdResult, error) { return relayForward(ctx, p.url, fwdFrame, d) })
	return r
}

// relayForward is derpfwd's measurement with plurenet's relay client.
func relayForward(ctx context.Context, url string, size int, d time.Duration) (fwdResult, error) {
	res := fwdResult{Size: size}
	ctx, cancel := context.WithTimeout(ctx, startWait+d+fwdDrain)
	defer cancel()
	// A fresh test mesh: its admission key from a random seed.
	var seed [32]byte
	rand.Read(seed[:])
	adm := relayproto.NewAdmissionKey(seed)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	mk := func() (*relay.Client, error) {
		k, err := nodekey.NewPrivate()
		if err != nil {
			return nil, err
		}
		c, err := relay.New(relay.Config{URL: url, PrivateKey: k, Admission: adm, Logger: log})
		if err != nil {
			return nil, err
		}
		if err := c.WaitConnected(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("connecting to %s: %w", url, err)
		}
		return c, nil
	}
	src, err := mk()
	if err != nil {
		return res, err
	}
	defer src.Close()
	dst, err := mk()
	if err != nil {
		return res, err
	}
	var delivered, probes atomic.Uint64
	var last atomic.Int64
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			m, err := dst.Recv(ctx)
			if err != nil {
				return
			}
			switch {
			case m.Kind != relay.KindUnicast:
			case len(m.Payload) == size:
				delivered.Add(1)
				last.Store(time.Now().UnixNano())
			default:
				probes.Add(1)
			}
		}
	}()
	defer func() {
		dst.Close()
		<-recvDone
	}()
	to := dst.PublicKey()
	for probe := []byte{1}; probes.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if ctx.Err() != nil {
			return res, errors.New("no probe frame arrived")
		}
		src.Send(to, probe) // a probe lost before the peer is known is resent
	}
	payload := make([]byte, size)
	start := time.Now()
	for end := start.Add(d); time.Now().Before(end); {
		switch err := src.Send(to, payload); {
		case err == nil:
			res.Sent++
		case errors.Is(err, relay.ErrQueueFull):
			time.Sleep(fwdBackoff)
		default:
			return res, fmt.Errorf("send after %d frames: %w", res.Sent, err)
		}
	}
	time.Sleep(fwdDrain)
	res.Delivered = delivered.Load()
	if res.Delivered == 0 {
		return res, errors.New("no frame delivered")
	}
	res.Seconds = time.Duration(last.Load() - start.UnixNano()).Seconds()
	return res, nil
}

// fwdRows adds the relay forwarding rows: DERP (when bench/derp was built),
// then the plurenet relay with its defaults and without a rate limit.
func fwdRows(ctx context.Context, t *table, plurenet, derper, derpfwd string, d time.Duration) {
	var anchor *row
	if derper == "" || derpfwd == "" {
		t.footer = append(t.footer, "DERP anchor: not built (scripts/bench.sh builds bench/derp; give -derper and -derpfwd)")
	} else {
		anchor = t.add(derpRow(ctx, derper, derpfwd, d))
	}
	if _, err := os.Stat(plurenet); err != nil {
		t.add(&row{section: sectionLoopback, label: "relay fwd: plurenet relay", err: fmt.Errorf("-plurenet: %w", err)})
		return
	}
	for _, v := range []struct {
		label string
		args  []string
	}{
		{"relay fwd: plurenet relay, defaults", nil},
		{"relay fwd: plurenet relay, --rate 0", []string{"--rate", "0"}},
	} {
		r := t.add(plurenetRelayRow(ctx, plurenet, v.label, v.args, d))
		r.anchor = anchor
	}
}
