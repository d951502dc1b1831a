package portfwd

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/cable"
	"github.com/plures/plurenet/internal/echotest"
	"github.com/plures/plurenet/tun/netstack"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTimeout only keeps a broken test from hanging.
const testTimeout = 30 * time.Second

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// echoServer echoes every connection on ln until EOF, then half-closes, so
// a client sees its own bytes followed by EOF only if half-close propagated
// through the forward both ways.
func echoServer(t *testing.T, ln net.Listener) { echotest.Serve(t, ln) }

// runForward runs Forward until the test ends and checks it returns nil on
// cancellation.
func runForward(t *testing.T, ln net.Listener, dial func(context.Context) (net.Conn, error)) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Forward(ctx, ln, dial, quiet()) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Forward returned %v after cancel, want nil", err)
		}
	})
}

// echoThrough sends msg over c, half-closes, and checks the echo.
func echoThrough(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo: got %d bytes, want %d", len(got), len(msg))
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestForwardRealSockets(t *testing.T) {
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, target)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	runForward(t, ln, func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", target.Addr().String())
	})
	// Several at once, each with its own payload.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			echoThrough(t, c, randomBytes(64<<10*(i+1)))
		}()
	}
	wg.Wait()
}

func TestForwardDialFailureClosesClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	runForward(t, ln, func(ctx context.Context) (net.Conn, error) {
		return nil, errors.New("target unreachable")
	})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from a forward whose target failed", n)
	}
}

func TestForwardReturnsWhenListenerCloses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		errc <- Forward(context.Background(), ln, func(context.Context) (net.Conn, error) {
			return nil, errors.New("unused")
		}, nil)
	}()
	ln.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Forward = %v, want net.ErrClosed", err)
	}
}

func TestForwardCancelClosesConnections(t *testing.T) {
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, target)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	var d net.Dialer
	go func() {
		errc <- Forward(ctx, ln, func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", target.Addr().String())
		}, quiet())
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	// Prove the connection is spliced before cancelling.
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Forward = %v, want nil", err)
	}
	// Forward has returned, so it closed our connection's far end.
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after Forward returned")
	}
}

func newOverlay(t *testing.T) (a, b *netstack.Stack) {
	var err error
	a, err = netstack.New(netstack.Config{Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("fd00::1")}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	b, err = netstack.New(netstack.Config{Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("fd00::2")}, Logger: quiet()})
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	cable.Connect(t, a, b)
	return a, b
}

// TestForwardOverOverlay is --forward: a real local port on A reaches an
// echo service listening on B's overlay address.
func TestForwardOverOverlay(t *testing.T) {
	a, b := newOverlay(t)
	svc, err := b.Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, svc)
	spec, err := ParseForward("18080=[fd00::2]:7")
	if err != nil {
		t.Fatal(err)
	}
	// Port 0 is not a valid spec, so listen on a free port rather than
	// spec.Listen, which another process may hold.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	runForward(t, ln, func(ctx context.Context) (net.Conn, error) {
		return a.DialContext(ctx, "tcp", spec.TargetAddr())
	})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	echoThrough(t, c, randomBytes(1<<20))
}

// TestExposeOverOverlay is --expose: B's overlay port reaches a real local
// echo service on 127.0.0.1, and A dials it over the overlay.
func TestExposeOverOverlay(t *testing.T) {
	a, b := newOverlay(t)
	svc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, svc)
	spec, err := ParseExpose("8080=" + svc.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := b.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	runForward(t, ln, func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", spec.Local)
	})
	for _, dst := range []string{"100.64.0.2:8080", "[fd00::2]:8080"} {
		c, err := a.DialContext(context.Background(), "tcp", dst)
		if err != nil {
			t.Fatal(err)
		}
		echoThrough(t, c, randomBytes(1<<20))
	}
}

func TestSpliceHalfClose(t *testing.T) {
	// a1<->a2 and b1<->b2 are real TCP pairs; Splice(a2, b1) joins them so
	// a1 talks to b2. After a1 half-closes, b2 must still be able to send.
	pair := func() (net.Conn, net.Conn) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c1, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c2, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c1, c2
	}
	a1, a2 := pair()
	b1, b2 := pair()
	defer a1.Close()
	defer b2.Close()
	errc := make(chan error, 1)
	go func() { errc <- Splice(context.Background(), a2, b1) }()

	a1.SetDeadline(time.Now().Add(testTimeout))
	b2.SetDeadline(time.Now().Add(testTimeout))
	a1.Write([]byte("request"))
	a1.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(b2) // EOF arrives only through CloseWrite
	if err != nil || string(got) != "request" {
		t.Fatalf("b2 read %q, %v", got, err)
	}
	b2.Write([]byte("response after half-close"))
	b2.Close()
	got, err = io.ReadAll(a1)
	if err != nil || string(got) != "response after half-close" {
		t.Fatalf("a1 read %q, %v", got, err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Splice = %v", err)
	}
}
