package netstack

import (
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/tun"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	addrA4 = netip.MustParseAddr("100.64.0.1")
	addrB4 = netip.MustParseAddr("100.64.0.2")
	addrA6 = netip.MustParseAddr("fd00::1")
	addrB6 = netip.MustParseAddr("fd00::2")
)

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newStack(tb testing.TB, addrs ...netip.Addr) *Stack {
	tb.Helper()
	s, err := New(Config{Addrs: addrs, Logger: quietLogger()})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// newPair returns two stacks (A: 100.64.0.1, fd00::1; B: 100.64.0.2,
// fd00::2) joined by a cable.
func newPair(tb testing.TB) (a, b *Stack) {
	tb.Helper()
	a = newStack(tb, addrA4, addrA6)
	b = newStack(tb, addrB4, addrB6)
	connect(tb, a, b)
	return a, b
}

// connect runs a "cable": one goroutine per direction copying every batch
// that one stack's Read returns into the other's Write, as the WireGuard
// device would after encrypting and decrypting. It stops when the stacks
// close; cleanup closes them and waits.
func connect(tb testing.TB, a, b tun.Device) {
	var wg sync.WaitGroup
	wg.Add(2)
	go pump(&wg, a, b)
	go pump(&wg, b, a)
	tb.Cleanup(func() {
		a.Close()
		b.Close()
		wg.Wait()
	})
}

func pump(wg *sync.WaitGroup, src, dst tun.Device) {
	defer wg.Done()
	bufs := make([][]byte, src.BatchSize())
	pkts := make([][]byte, src.BatchSize())
	sizes := make([]int, src.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, 65535)
	}
	for {
		n, err := src.Read(bufs, sizes, 0)
		if err != nil {
			return
		}
		for i := range n {
			pkts[i] = bufs[i][:sizes[i]]
		}
		if _, err := dst.Write(pkts[:n], 0); err != nil {
			// The far side closed: keep draining until our side closes
			// too, so its Read does not matter.
			continue
		}
	}
}
