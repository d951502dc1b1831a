package netstack

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/plures/plurenet/internal/cable"
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

// connect joins two devices back to back (see cable.Connect).
func connect(tb testing.TB, a, b tun.Device) { cable.Connect(tb, a, b) }
