package netstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/echotest"
	"golang.zx2c4.com/wireguard/tun"
)

// testTimeout only keeps a broken test from hanging; nothing asserts on time.
const testTimeout = 30 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// echoServer echoes every connection on ln (see echotest.Serve).
func echoServer(t *testing.T, ln net.Listener) { echotest.Serve(t, ln) }

func roundTrip(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatalf("close write: %v", err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo mismatch: got %d bytes, want %d", len(got), len(msg))
	}
}

func TestTCPEcho(t *testing.T) {
	a, b := newPair(t)
	tests := []struct {
		name           string
		dialer, server *Stack
		network        string
		listen, dial   netip.Addr
	}{
		{"v4 a to b", a, b, "tcp4", addrB4, addrB4},
		{"v4 b to a", b, a, "tcp4", addrA4, addrA4},
		{"v6 a to b", a, b, "tcp6", addrB6, addrB6},
		{"v6 b to a", b, a, "tcp6", addrA6, addrA6},
		{"tcp network v4", a, b, "tcp", addrB4, addrB4},
		{"tcp network v6", b, a, "tcp", addrA6, addrA6},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := uint16(1000 + i)
			ln, err := tt.server.Listen(tt.network, netip.AddrPortFrom(tt.listen, port).String())
			if err != nil {
				t.Fatal(err)
			}
			echoServer(t, ln)
			c, err := tt.dialer.DialContext(testContext(t), tt.network, netip.AddrPortFrom(tt.dial, port).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.RemoteAddr().String(); got != netip.AddrPortFrom(tt.dial, port).String() {
				t.Errorf("RemoteAddr = %s, want %s", got, netip.AddrPortFrom(tt.dial, port))
			}
			msg := make([]byte, 100_000)
			rand.Read(msg)
			roundTrip(t, c, msg)
		})
	}
}

func TestUDPEcho(t *testing.T) {
	a, b := newPair(t)
	pc, err := b.ListenPacket("udp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	defer func() {
		pc.Close()
		wg.Wait()
	}()

	for _, tt := range []struct {
		network string
		dst     netip.Addr
	}{
		{"udp4", addrB4},
		{"udp6", addrB6},
		{"udp", addrB4},
		{"udp", addrB6},
	} {
		t.Run(tt.network+" "+tt.dst.String(), func(t *testing.T) {
			c, err := a.DialContext(testContext(t), tt.network, netip.AddrPortFrom(tt.dst, 7).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(testTimeout))
			msg := []byte("hello over " + tt.dst.String())
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 2048)
			n, err := c.Read(got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[:n], msg) {
				t.Fatalf("got %q, want %q", got[:n], msg)
			}
		})
	}
}

func TestListenPacketWriteToAnyAddr(t *testing.T) {
	a, b := newPair(t)
	srv, err := b.ListenPacket("udp4", "100.64.0.2:9")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := a.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	// A net.Addr that is not *net.UDPAddr, and an IPv4-mapped IPv6 form.
	dsts := []net.Addr{
		fakeAddr("100.64.0.2:9"),
		&net.UDPAddr{IP: net.ParseIP("::ffff:100.64.0.2"), Port: 9},
	}
	srv.SetDeadline(time.Now().Add(testTimeout))
	for i, dst := range dsts {
		msg := fmt.Appendf(nil, "datagram %d", i)
		if _, err := cli.WriteTo(msg, dst); err != nil {
			t.Fatalf("WriteTo(%v): %v", dst, err)
		}
		buf := make([]byte, 100)
		n, from, err := srv.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Fatalf("got %q, want %q", buf[:n], msg)
		}
		if ap := from.(*net.UDPAddr).AddrPort(); ap.Addr().Unmap() != addrA4 {
			t.Errorf("from = %v, want %v", from, addrA4)
		}
	}
	if _, err := cli.WriteTo([]byte("x"), fakeAddr("not-an-address")); err == nil {
		t.Error("WriteTo with a bad address succeeded")
	}
}

type fakeAddr string

func (fakeAddr) Network() string  { return "udp" }
func (a fakeAddr) String() string { return string(a) }

func TestListenAnyAddress(t *testing.T) {
	a, b := newPair(t)
	ln, err := b.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	for _, dst := range []netip.Addr{addrB4, addrB6} {
		t.Run(dst.String(), func(t *testing.T) {
			c, err := a.DialContext(testContext(t), "tcp", netip.AddrPortFrom(dst, 80).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			roundTrip(t, c, []byte("any address "+dst.String()))
		})
	}
}

func TestListenV6OnlyRejectsV4(t *testing.T) {
	a, b := newPair(t)
	ln, err := b.Listen("tcp6", ":81")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	c, err := a.DialContext(testContext(t), "tcp", "[fd00::2]:81")
	if err != nil {
		t.Fatalf("v6 dial to tcp6 listener: %v", err)
	}
	c.Close()
	// Nothing listens on v4 port 81, so B answers with a reset.
	if _, err := a.DialContext(testContext(t), "tcp", "100.64.0.2:81"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("v4 dial to tcp6 listener: err = %v, want ECONNREFUSED", err)
	}
}

func TestDialErrors(t *testing.T) {
	a, _ := newPair(t)
	tests := []struct {
		name, network, address string
		want                   error
	}{
		{"name not literal", "tcp", "peer.mesh:80", ErrNotIPLiteral},
		{"refused", "tcp", "100.64.0.2:9999", syscall.ECONNREFUSED},
		{"refused v6", "tcp6", "[fd00::2]:9999", syscall.ECONNREFUSED},
		{"bad network", "sctp", "100.64.0.2:80", nil},
		{"family mismatch", "tcp4", "[fd00::2]:80", nil},
		{"port zero", "tcp", "100.64.0.2:0", nil},
		{"missing port", "tcp", "100.64.0.2", nil},
		{"bad port", "udp", "100.64.0.2:99999", nil},
		{"unspecified", "tcp", "0.0.0.0:80", nil},
		{"empty host", "tcp", ":80", nil},
		{"zone", "tcp6", "[fe80::1%eth0]:80", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := a.DialContext(testContext(t), tt.network, tt.address)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestListenErrors(t *testing.T) {
	s := newStack(t, addrA4)
	tests := []struct{ network, address string }{
		{"udp", ":80"},          // Listen is TCP only
		{"tcp", "10.0.0.9:80"},  // not our address
		{"tcp4", "[fd00::1]:1"}, // family mismatch
		{"tcp", "name:80"},
		{"tcp", "100.64.0.1:http"},
	}
	for _, tt := range tests {
		if ln, err := s.Listen(tt.network, tt.address); err == nil {
			ln.Close()
			t.Errorf("Listen(%q, %q) succeeded", tt.network, tt.address)
		}
	}
	ln, err := s.Listen("tcp", ":90")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln2, err := s.Listen("tcp", ":90"); !errors.Is(err, syscall.EADDRINUSE) {
		if ln2 != nil {
			ln2.Close()
		}
		t.Fatalf("second Listen on :90: err = %v, want EADDRINUSE", err)
	}
	if pc, err := s.ListenPacket("tcp", ":90"); err == nil {
		pc.Close()
		t.Error("ListenPacket on tcp succeeded")
	}
}

func TestDialCanceled(t *testing.T) {
	// A lone stack with no cable: the SYN goes nowhere, so only the
	// context can end the dial.
	s := newStack(t, addrA4)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.DialContext(ctx, "tcp", "100.64.0.9:80")
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestSetAddrsMovesAddress(t *testing.T) {
	a, b := newPair(t)
	ln, err := b.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)

	moved := netip.MustParseAddr("100.64.0.3")
	if err := b.SetAddrs([]netip.Addr{moved, addrB6}); err != nil {
		t.Fatal(err)
	}
	if got, want := b.Addrs(), []netip.Addr{addrB6, moved}; !slices.Equal(got, want) {
		t.Fatalf("Addrs = %v, want %v", got, want)
	}

	// The new address answers.
	c, err := a.DialContext(testContext(t), "tcp", "100.64.0.3:80")
	if err != nil {
		t.Fatalf("dial new address: %v", err)
	}
	roundTrip(t, c, []byte("moved"))
	c.Close()

	// The old one is silently dropped by B (no RST: it is not B's address
	// any more). Wait until B has counted the SYN as addressed to someone
	// else, then end the dial: it must not have connected.
	invalid := b.stack.Stats().IP.InvalidDestinationAddressesReceived
	before := invalid.Value()
	ctx, cancel := context.WithCancel(testContext(t))
	errc := make(chan error, 1)
	go func() {
		c, err := a.DialContext(ctx, "tcp", "100.64.0.2:80")
		if err == nil {
			c.Close()
		}
		errc <- err
	}()
	for invalid.Value() == before {
		select {
		case err := <-errc:
			cancel()
			t.Fatalf("dial to old address ended before B saw the SYN: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("dial to old address: err = %v, want it still pending (context.Canceled)", err)
	}

	// Moving back restores the old address.
	if err := b.SetAddrs([]netip.Addr{addrB4, addrB6}); err != nil {
		t.Fatal(err)
	}
	c, err = a.DialContext(testContext(t), "tcp", "100.64.0.2:80")
	if err != nil {
		t.Fatalf("dial restored address: %v", err)
	}
	roundTrip(t, c, []byte("restored"))
	c.Close()
}

func TestSetAddrsRejectsBadInput(t *testing.T) {
	s := newStack(t, addrA4)
	for _, addrs := range [][]netip.Addr{
		{netip.Addr{}},
		{netip.IPv4Unspecified()},
		{addrB4, addrB4},
		{netip.MustParseAddr("fe80::1%eth0")},
	} {
		if err := s.SetAddrs(addrs); err == nil {
			t.Errorf("SetAddrs(%v) succeeded", addrs)
		}
	}
	if got := s.Addrs(); !slices.Equal(got, []netip.Addr{addrA4}) {
		t.Errorf("Addrs changed after rejected SetAddrs: %v", got)
	}
}

func TestCloseUnblocks(t *testing.T) {
	a, b := newPair(t)
	ln, err := b.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := a.DialContext(testContext(t), "tcp", "100.64.0.2:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	pc, err := b.ListenPacket("udp", ":53")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()

	// A third stack with no cable, so its Read has nothing to return.
	lone := newStack(t, netip.MustParseAddr("100.64.0.7"))
	type blocked struct {
		what string
		err  error
	}
	errs := make(chan blocked, 4)
	go func() {
		_, err := lone.Read([][]byte{make([]byte, 2000)}, []int{0}, 0)
		errs <- blocked{"stack read", err}
	}()
	go func() {
		_, err := ln.Accept()
		errs <- blocked{"accept", err}
	}()
	go func() {
		_, err := sc.Read(make([]byte, 10))
		errs <- blocked{"conn read", err}
	}()
	go func() {
		_, _, err := pc.ReadFrom(make([]byte, 10))
		errs <- blocked{"packet read", err}
	}()

	lone.Close()
	b.Close()
	b.Close() // idempotent
	for range 4 {
		if r := <-errs; r.err == nil {
			t.Errorf("%s returned no error after Close", r.what)
		} else {
			t.Logf("%s: %v", r.what, r.err)
		}
	}
	if _, err := lone.Read([][]byte{make([]byte, 2000)}, []int{0}, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close: %v, want os.ErrClosed", err)
	}
	if _, err := b.Listen("tcp", ":81"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Listen after Close: %v, want net.ErrClosed", err)
	}
	if _, err := b.DialContext(testContext(t), "tcp", "100.64.0.1:80"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Dial after Close: %v, want net.ErrClosed", err)
	}
	if _, err := b.Write([][]byte{{0x45}}, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close: %v, want os.ErrClosed", err)
	}
	if err := b.SetAddrs(nil); !errors.Is(err, os.ErrClosed) {
		t.Errorf("SetAddrs after Close: %v, want os.ErrClosed", err)
	}
}

func TestAcceptAfterListenerClose(t *testing.T) {
	s := newStack(t, addrA4)
	ln, err := s.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		errc <- err
	}()
	ln.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

func TestEvents(t *testing.T) {
	s, err := New(Config{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if ev := <-s.Events(); ev != tun.EventUp {
		t.Fatalf("first event = %v, want EventUp", ev)
	}
	if mtu, _ := s.MTU(); mtu != DefaultMTU {
		t.Errorf("MTU = %d, want %d", mtu, DefaultMTU)
	}
	if s.File() != nil {
		t.Error("File() != nil")
	}
	s.Close()
	if _, ok := <-s.Events(); ok {
		t.Fatal("Events not closed after Close")
	}
}

func TestConfigMTU(t *testing.T) {
	for _, mtu := range []int{-1, 576, 1279, 65536} {
		if s, err := New(Config{MTU: mtu}); err == nil {
			s.Close()
			t.Errorf("New with MTU %d succeeded", mtu)
		}
	}
	s, err := New(Config{MTU: 1420, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if mtu, _ := s.MTU(); mtu != 1420 {
		t.Errorf("MTU = %d, want 1420", mtu)
	}
}

func TestTransfer32MiB(t *testing.T) {
	if testing.Short() {
		t.Skip("32 MiB transfer skipped in -short mode")
	}
	a, b := newPair(t)
	ln, err := b.Listen("tcp", ":5001")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	const size = 32 << 20
	type result struct {
		n   int64
		sum []byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(testTimeout * 4))
		h := sha256.New()
		n, err := io.Copy(h, c)
		res <- result{n, h.Sum(nil), err}
	}()

	c, err := a.DialContext(testContext(t), "tcp", "100.64.0.2:5001")
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(testTimeout * 4))
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(rand.Reader, size), h)
	if _, err := io.Copy(c, src); err != nil {
		t.Fatalf("send: %v", err)
	}
	c.Close()
	r := <-res
	if r.err != nil {
		t.Fatalf("receive: %v", r.err)
	}
	if r.n != size {
		t.Fatalf("received %d bytes, want %d", r.n, size)
	}
	if !bytes.Equal(r.sum, h.Sum(nil)) {
		t.Fatal("SHA-256 of received data differs from sent")
	}
}
