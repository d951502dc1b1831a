// Command derpfwd is the DERP anchor of "make bench": two of Tailscale's
// derphttp clients on a running DERP server (cmd/derper, started by
// plurenet-bench on 127.0.0.1), one sending -size-byte frames to the other as
// fast as its client lets it for -duration. It counts the frames the
// receiver got (delivered, not sent: DERP drops what a full per-client queue
// cannot hold) and prints one JSON object, the same fields as
// plurenet-bench's relay forwarding measurement:
//
//	{"size":…,"sent":…,"delivered":…,"seconds":…}
//
// seconds runs from the first send to the last frame received. It imports
// Tailscale's packages (BSD-3-Clause, see bench/README.md) and copies none.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"tailscale.com/derp"
	"tailscale.com/derp/derphttp"
	"tailscale.com/net/netmon"
	"tailscale.com/types/key"
	"tailscale.com/types/logger"
)

// Bounds: they only keep a broken run from hanging.
const (
	connectWait = 30 * time.Second
	// drainWait is how long the receiver keeps counting after the sender
	// stops: frames still queued in the server arrive within it; a frame
	// the server dropped never does.
	drainWait   = 500 * time.Millisecond
	maxDuration = 10 * time.Minute
	maxSize     = 64 << 10
)

type result struct {
	Size      int     `json:"size"`
	Sent      uint64  `json:"sent"`
	Delivered uint64  `json:"delivered"`
	Seconds   float64 `json:"seconds"`
}

func main() {
	url := flag.String("url", "", "DERP server URL, e.g. http://127.0.0.1:3340/derp")
	size := flag.Int("size", 1400, "payload bytes per frame")
	d := flag.Duration("duration", 10*time.Second, "how long the sender sends")
	flag.Parse()
	switch {
	case *url == "":
		fmt.Fprintln(os.Stderr, "derpfwd: -url is required")
		os.Exit(2)
	case *size < 8 || *size > maxSize:
		fmt.Fprintf(os.Stderr, "derpfwd: -size must be 8..%d\n", maxSize)
		os.Exit(2)
	case *d <= 0 || *d > maxDuration:
		fmt.Fprintf(os.Stderr, "derpfwd: -duration must be in (0, %v]\n", maxDuration)
		os.Exit(2)
	}
	res, err := run(*url, *size, *d)
	if err != nil {
		fmt.Fprintf(os.Stderr, "derpfwd: %v\n", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintf(os.Stderr, "derpfwd: %v\n", err)
		os.Exit(1)
	}
}

func newClient(ctx context.Context, url string) (*derphttp.Client, error) {
	c, err := derphttp.NewClient(key.NewNode(), url, logger.Discard, netmon.NewStatic())
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("connecting to %s: %w", url, err)
	}
	return c, nil
}

func run(url string, size int, d time.Duration) (result, error) {
	res := result{Size: size}
	ctx, cancel := context.WithTimeout(context.Background(), connectWait)
	defer cancel()
	src, err := newClient(ctx, url)
	if err != nil {
		return res, err
	}
	defer src.Close()
	dst, err := newClient(ctx, url)
	if err != nil {
		return res, err
	}
	defer dst.Close()

	var delivered, probes atomic.Uint64
	var last atomic.Int64 // unix nanos of the last frame received
	var start time.Time
	var wg sync.WaitGroup
	recvErr := make(chan error, 1)
	wg.Go(func() {
		for {
			m, err := dst.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			p, ok := m.(derp.ReceivedPacket)
			switch {
			case !ok:
			case len(p.Data) == size:
				delivered.Add(1)
				last.Store(time.Now().UnixNano())
			default:
				probes.Add(1)
			}
		}
	})
	// A probe frame (shorter than the measured ones) that arrives proves
	// both clients are registered with the server before the clock starts.
	to := dst.SelfPublicKey()
	for probe := []byte{1}; delivered.Load() == 0 && probes.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if ctx.Err() != nil {
			return res, fmt.Errorf("no probe frame arrived within %v", connectWait)
		}
		if err := src.Send(to, probe); err != nil {
			return res, fmt.Errorf("probe: %w", err)
		}
	}
	payload := make([]byte, size)
	start = time.Now()
	for end := start.Add(d); time.Now().Before(end); {
		if err := src.Send(to, payload); err != nil {
			return res, fmt.Errorf("send after %d frames: %w", res.Sent, err)
		}
		res.Sent++
	}
	time.Sleep(drainWait)
	dst.Close()
	wg.Wait()
	if err := <-recvErr; err != nil && !errors.Is(err, derphttp.ErrClientClosed) {
		// Close makes Recv fail; any other error came first.
		if delivered.Load() == 0 {
			return res, fmt.Errorf("receiver: %w", err)
		}
	}
	res.Delivered = delivered.Load()
	if res.Delivered == 0 {
		return res, errors.New("no frame delivered")
	}
	res.Seconds = time.Duration(last.Load() - start.UnixNano()).Seconds()
	return res, nil
}
