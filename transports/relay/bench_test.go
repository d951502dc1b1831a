package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plures/plurenet/relayserver"
)

// benchPayload is a full-size WireGuard packet on a 1500-byte path minus
// headroom, the common case the relay carries.
const benchPayload = 1400

// benchWindow bounds frames in flight so the benchmark measures throughput,
// not drops: it is below every queue on the way (client send queue, relay
// send queue, client receive queue).
const benchWindow = 256

// BenchmarkRelayThroughput pushes benchPayload-byte frames from one client to
// another through an in-process relay on loopback. Compare with
// BenchmarkTCPPipe from the same run for the relay's cost over raw TCP.
func BenchmarkRelayThroughput(b *testing.B) {
	r := startRelay(b, relayserver.Config{RateBytesPerSec: -1}, nil)
	rv := newAdmission(b)
	src := newClient(b, Config{URL: r.url, Admission: rv})
	dst := newClient(b, Config{URL: r.url, Admission: rv})
	waitConnected(b, src)
	waitConnected(b, dst)
	waitPresent(b, src, dst.PublicKey())

	var received atomic.Int64
	progress := make(chan struct{}, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	n := int64(b.N)
	go func() {
		for received.Load() < n {
			m, err := dst.Recv(ctx)
			if err != nil {
				done <- err
				return
			}
			if m.Kind != KindUnicast {
				continue
			}
			received.Add(1)
			select {
			case progress <- struct{}{}:
			default:
			}
		}
		done <- nil
	}()

	payload := make([]byte, benchPayload)
	to := dst.PublicKey()
	b.SetBytes(benchPayload)
	b.ReportAllocs()
	b.ResetTimer()
	for sent := int64(0); sent < n; {
		if sent-received.Load() >= benchWindow {
			select {
			case <-progress:
			case <-time.After(time.Millisecond):
			}
			continue
		}
		err := src.Send(to, payload)
		switch {
		case err == nil:
			sent++
		case errors.Is(err, ErrQueueFull):
			<-time.After(50 * time.Microsecond)
		default:
			b.Fatalf("Send: %v", err)
		}
	}
	if err := <-done; err != nil {
		b.Fatalf("receiver: %v after %d of %d frames (sender %+v, receiver %+v)", err, received.Load(), n, src.Status(), dst.Status())
	}
	b.StopTimer()
}

// BenchmarkTCPPipe is the baseline: the same payloads written one per write
// call through a plain loopback TCP connection.
func BenchmarkTCPPipe(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	n := b.N
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		buf := make([]byte, benchPayload)
		for range n {
			if _, err := io.ReadFull(c, buf); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, benchPayload)
	b.SetBytes(benchPayload)
	b.ReportAllocs()
	b.ResetTimer()
	for range n {
		if _, err := c.Write(payload); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
}
