package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	wgconn "golang.zx2c4.com/wireguard/conn"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/relayserver"
	"github.com/plures/plurenet/transports"
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
	relayThroughput(b, startRelay(b, relayserver.Config{RateBytesPerSec: relayserver.Unlimited}, nil), nil)
}

// BenchmarkRelayThroughputTLS is BenchmarkRelayThroughput over wss://.
func BenchmarkRelayThroughputTLS(b *testing.B) {
	r := startTLSRelay(b, relayserver.Config{RateBytesPerSec: relayserver.Unlimited})
	roots := x509.NewCertPool()
	roots.AddCert(r.ts.Certificate())
	relayThroughput(b, r, &tls.Config{RootCAs: roots})
}

// BenchmarkRelayThroughputDefaults is BenchmarkRelayThroughput through a
// relay with its default limits: the per-connection rate, which the sending
// client paces itself to, is what a member of a relay run with no options
// gets.
func BenchmarkRelayThroughputDefaults(b *testing.B) {
	relayThroughput(b, startRelay(b, relayserver.Config{}, nil), nil)
}

// relayThroughput runs a throughput benchmark through r, whose clients
// trust tlsConf's roots (nil for ws://).
func relayThroughput(b *testing.B, r *testRelay, tlsConf *tls.Config) {
	rv := newAdmission(b)
	src := newClient(b, Config{URL: r.url, Admission: rv, TLSConfig: tlsConf})
	dst := newClient(b, Config{URL: r.url, Admission: rv, TLSConfig: tlsConf})
	waitConnected(b, src)
	waitConnected(b, dst)
	waitPresent(b, src, dst.PublicKey())

	w := newWindow()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	n := int64(b.N)
	go func() {
		for w.received.Load() < n {
			m, err := dst.Recv(ctx)
			if err != nil {
				done <- err
				return
			}
			if m.Kind == KindUnicast {
				w.add(1)
			}
		}
		done <- nil
	}()
	w.send(b, src, dst.PublicKey(), make([]byte, benchPayload), n)
	if err := <-done; err != nil {
		b.Fatalf("receiver: %v after %d of %d frames (sender %+v, receiver %+v)", err, w.received.Load(), n, src.Status(), dst.Status())
	}
	b.StopTimer()
	w.reportCPU(b, n*benchPayload)
}

// window keeps the sender of a benchmark at most benchWindow frames ahead
// of the receiver.
type window struct {
	received atomic.Int64
	progress chan struct{} // a token when received moved
	cpu0     time.Duration // the process's CPU time when send started
}

// reportCPU reports the process's CPU seconds per GB of payload since send
// started: relay and both clients together, as they share the process.
func (w *window) reportCPU(b *testing.B, payloadBytes int64) {
	cpu, ok := processCPU()
	if !ok || payloadBytes == 0 {
		return
	}
	b.ReportMetric((cpu-w.cpu0).Seconds()/(float64(payloadBytes)/1e9), "cpu-s/GB")
}

func newWindow() *window { return &window{progress: make(chan struct{}, 1)} }

// add counts k frames received.
func (w *window) add(k int) {
	w.received.Add(int64(k))
	select {
	case w.progress <- struct{}{}:
	default:
	}
}

// send starts the benchmark's timer and sends payload to peer n times,
// waiting while the window is full or the client's queue is.
func (w *window) send(b *testing.B, src *Client, to nodekey.Public, payload []byte, n int64) {
	b.Helper()
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	w.cpu0, _ = processCPU()
	b.ResetTimer()
	for sent := int64(0); sent < n; {
		if sent-w.received.Load() >= benchWindow {
			select {
			case <-w.progress:
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
}

// BenchmarkRelayToBind pushes WireGuard-shaped benchPayload-byte frames
// from one client through an in-process relay into a transports.Bind on
// the other side, read out with the Bind's ReceiveFunc as the WireGuard
// device reads it: the whole receive path of a relay packet up to the
// device.
func BenchmarkRelayToBind(b *testing.B) {
	r := startRelay(b, relayserver.Config{RateBytesPerSec: relayserver.Unlimited}, nil)
	rv := newAdmission(b)
	bind := transports.NewBind(transports.BindConfig{Logger: quietLogger()})
	src := newClient(b, Config{URL: r.url, Admission: rv})
	// As the node wires its relays: the reader hands WireGuard messages
	// to the Bind itself.
	dst := newClient(b, Config{URL: r.url, Admission: rv, Deliver: bind.Deliver})
	fns, _, err := bind.Open(0)
	if err != nil {
		b.Fatal(err)
	}
	defer bind.Close()
	waitConnected(b, src)
	waitConnected(b, dst)
	waitPresent(b, src, dst.PublicKey())

	w := newWindow()
	done := make(chan error, 1)
	n := int64(b.N)
	go func() {
		bs := wgconn.IdealBatchSize
		bufs := make([][]byte, bs)
		for i := range bufs {
			bufs[i] = make([]byte, 2048)
		}
		sizes := make([]int, bs)
		eps := make([]wgconn.Endpoint, bs)
		for w.received.Load() < n {
			k, err := fns[0](bufs, sizes, eps)
			if err != nil {
				done <- err
				return
			}
			w.add(k)
		}
		done <- nil
	}()
	payload := make([]byte, benchPayload)
	payload[0] = 4 // a WireGuard data message
	w.send(b, src, dst.PublicKey(), payload, n)
	select {
	case err := <-done:
		if err != nil {
			b.Fatalf("receiver: %v", err)
		}
	case <-time.After(time.Minute):
		b.Fatalf("receiver got %d of %d (bind %+v)", w.received.Load(), n, bind.Stats())
	}
	b.StopTimer()
	w.reportCPU(b, n*benchPayload)
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
