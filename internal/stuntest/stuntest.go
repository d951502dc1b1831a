// Package stuntest serves STUN on loopback for tests: the relay's own
// responder, or one that reports a fixed address, as a server would see a
// client from behind a NAT.
package stuntest

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/pion/stun/v4"

	"github.com/plures/plurenet/relayserver"
)

// Server serves the relay's STUN responder on 127.0.0.1 until the test
// ends, and returns its address.
func Server(t testing.TB) string { return ServerOn(t, "127.0.0.1:0") }

// ServerOn is Server on another loopback address, such as "[::1]:0".
func ServerOn(t testing.TB, addr string) string {
	return serve(t, addr, func(ctx context.Context, pc net.PacketConn) {
		_ = relayserver.ServeSTUN(ctx, pc, slog.New(slog.DiscardHandler))
	})
}

// Reporting serves STUN on 127.0.0.1 until the test ends, answering every
// binding request with mapped instead of the client's address.
func Reporting(t testing.TB, mapped netip.AddrPort) string {
	addr, release := Held(t, mapped)
	release()
	return addr
}

// Held is Reporting with its answers held back until release is called
// (once or more): a STUN server that is slow, or was, while a test
// watches what happens meanwhile. Up to 64 requests are kept and answered
// on release; after it, requests are answered at once. A zero mapped
// reports each client's own address, as Server does.
func Held(t testing.TB, mapped netip.AddrPort) (addr string, release func()) {
	type held struct {
		resp []byte
		to   net.Addr
	}
	var (
		mu       sync.Mutex
		pc       net.PacketConn
		released bool
		pending  []held
	)
	addr = serve(t, "127.0.0.1:0", func(_ context.Context, conn net.PacketConn) {
		mu.Lock()
		pc = conn
		mu.Unlock()
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if req.Decode() != nil || req.Type != stun.BindingRequest {
				continue
			}
			report := mapped
			if !report.IsValid() {
				ua, ok := from.(*net.UDPAddr)
				if !ok {
					continue
				}
				report = ua.AddrPort()
			}
			resp, err := stun.Build(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
				&stun.XORMappedAddress{IP: report.Addr().AsSlice(), Port: int(report.Port())})
			if err != nil {
				continue
			}
			mu.Lock()
			switch {
			case released:
				_, _ = conn.WriteTo(resp.Raw, from)
			case len(pending) < 64:
				pending = append(pending, held{resp.Raw, from})
			}
			mu.Unlock()
		}
	})
	return addr, func() {
		mu.Lock()
		defer mu.Unlock()
		released = true
		for _, h := range pending {
			if pc != nil {
				_, _ = pc.WriteTo(h.resp, h.to)
			}
		}
		pending = nil
	}
}

func serve(t testing.TB, addr string, run func(context.Context, net.PacketConn)) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Skipf("no UDP socket on %s: %v", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		run(ctx, pc)
	}()
	t.Cleanup(func() {
		cancel()
		pc.Close()
		wg.Wait()
	})
	return pc.LocalAddr().String()
}
