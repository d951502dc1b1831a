package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Loopback addresses stand in for overlay addresses: 127.0.0.0/8 is all
// local on Linux, so a socket on a wildcard address would answer on any of
// them, and one bound to 127.0.0.1 answers on no other.
var (
	loA = netip.MustParseAddr("127.0.0.1")
	loB = netip.MustParseAddr("127.0.0.3")
	lo6 = netip.IPv6Loopback()
)

func mustDial(t *testing.T, a netip.Addr, port int) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", netip.AddrPortFrom(a, uint16(port)).String(), 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s:%d: %v", a, port, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func refused(t *testing.T, a netip.Addr, port int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", netip.AddrPortFrom(a, uint16(port)).String(), 10*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("%s:%d accepted a connection; the listener must not be there", a, port)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s:%d: %v, want connection refused", a, port, err)
	}
}

// acceptOne accepts the next connection within a test-long wait.
func acceptOne(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept()
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Accept: %v", r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		return r.c
	case <-time.After(10 * time.Second):
		t.Fatal("Accept: nothing within 10 s")
		return nil
	}
}

func has6(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback")
	}
	ln.Close()
}

// TestOverlayListenerBindsOnlyOverlayAddrs: ":port" binds each overlay
// address (one port for all), nothing else, and follows the addresses when
// they move; connections accepted before the move stay up.
func TestOverlayListenerBindsOnlyOverlayAddrs(t *testing.T) {
	has6(t)
	l, err := newOverlayListener("tcp", 0, []netip.Addr{loA, lo6}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := int(l.Addr().(*net.TCPAddr).Port)
	if got := l.Addr().(*net.TCPAddr).AddrPort().Addr(); got != loA {
		t.Fatalf("Addr() = %v, want the IPv4 socket's", l.Addr())
	}

	before := mustDial(t, loA, port)
	acceptOne(t, l)
	mustDial(t, lo6, port)
	acceptOne(t, l)
	// Another local address: a wildcard socket would accept here.
	refused(t, loB, port)

	// The IPv4 moves to loB (a collision): loA is closed, loB opens.
	l.rebind([]netip.Addr{loB, lo6})
	refused(t, loA, port)
	mustDial(t, loB, port)
	acceptOne(t, l)
	mustDial(t, lo6, port)
	acceptOne(t, l)
	// The connection made before the move still works.
	if _, err := before.Write([]byte("still here")); err != nil {
		t.Fatalf("connection from before the move: %v", err)
	}

	l.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close = %v, want net.ErrClosed", err)
	}
	refused(t, loB, port)
	refused(t, lo6, port)
}

// TestOverlayListenerRebindFails: when the port is taken on the new
// address, Accept reports it instead of serving the old address alone.
func TestOverlayListenerRebindFails(t *testing.T) {
	l, err := newOverlayListener("tcp4", 0, []netip.Addr{loA, lo6}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	refused(t, lo6, port) // tcp4 binds the IPv4 only
	squat, err := net.Listen("tcp", fmt.Sprintf("%s:%d", loB, port))
	if err != nil {
		t.Fatal(err)
	}
	defer squat.Close()
	l.rebind([]netip.Addr{loB, lo6})
	if _, err := l.Accept(); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Accept after a failed rebind = %v, want the address-in-use error", err)
	}
}

// TestOverlayListenerNoFamily: "tcp6" on a node without IPv6 fails
// clearly, and leaves nothing behind.
func TestOverlayListenerNoFamily(t *testing.T) {
	if _, err := newOverlayListener("tcp6", 0, []netip.Addr{loA}, func(*overlayListener) { t.Error("release called for a listener never handed out") }); err == nil {
		t.Fatal("tcp6 listener without an IPv6 address")
	}
}

// TestKernelAdapterListenAddresses: with a kernel TUN, Listen binds only
// this node's overlay addresses: ":port" and an unspecified host mean all
// of them (and follow them), one of them means that one, and any other
// address is refused, as is a UDP socket on every address. (Loopback
// addresses stand in for the overlay ones; no TUN is needed for this.)
func TestKernelAdapterListenAddresses(t *testing.T) {
	has6(t)
	k := &kernelAdapter{v4: loA, v6: lo6, listeners: make(map[*overlayListener]bool)}
	for _, addr := range []string{":0", "0.0.0.0:0", "[::]:0"} {
		ln, err := k.listen("tcp", addr)
		if err != nil {
			t.Fatalf("listen %q: %v", addr, err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		mustDial(t, loA, port)
		mustDial(t, lo6, port)
		refused(t, loB, port)
		k.mu.Lock()
		registered := k.listeners[ln.(*overlayListener)]
		k.mu.Unlock()
		if !registered {
			t.Fatalf("listen %q: the listener would not follow an address move", addr)
		}
		ln.Close()
		k.mu.Lock()
		left := len(k.listeners)
		k.mu.Unlock()
		if left != 0 {
			t.Fatalf("Close left %d listeners registered", left)
		}
	}
	ln, err := k.listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on the overlay IPv4 itself: %v", err)
	}
	ln.Close()
	pc, err := k.listenPacket("udp", "[::1]:0")
	if err != nil {
		t.Fatalf("UDP on the overlay IPv6 itself: %v", err)
	}
	pc.Close()
	for _, c := range []struct{ network, addr, errHas string }{
		{"tcp", "127.0.0.3:80", "not an overlay address"},
		{"tcp", "alpha:80", "alpha"},
		{"udp", ":80", "want tcp"},
	} {
		if ln, err := k.listen(c.network, c.addr); err == nil || !strings.Contains(err.Error(), c.errHas) {
			if ln != nil {
				ln.Close()
			}
			t.Errorf("listen %s %q = %v, want an error mentioning %q", c.network, c.addr, err, c.errHas)
		}
	}
	for _, addr := range []string{":0", "0.0.0.0:0", "127.0.0.3:0"} {
		if pc, err := k.listenPacket("udp", addr); err == nil {
			pc.Close()
			t.Errorf("listenPacket %q on a kernel adapter succeeded, want refused", addr)
		}
	}
}
