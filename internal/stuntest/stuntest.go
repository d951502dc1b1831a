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
	return serve(t, "127.0.0.1:0", func(_ context.Context, pc net.PacketConn) {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if req.Decode() != nil || req.Type != stun.BindingRequest {
				continue
			}
			resp, err := stun.Build(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
				&stun.XORMappedAddress{IP: mapped.Addr().AsSlice(), Port: int(mapped.Port())})
			if err == nil {
				_, _ = pc.WriteTo(resp.Raw, from)
			}
		}
	})
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
