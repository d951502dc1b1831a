package direct

import (
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("DIRECT_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// signalNet is an in-test signaling channel: Signal on one transport calls
// HandleSignal on the other. drop, when set, loses signals; rewrite, when
// set, replaces the ones it keeps.
type signalNet struct {
	mu      sync.Mutex
	byK     map[nodekey.Public]*Transport
	drop    func(from, to nodekey.Public, msg []byte) bool
	rewrite func(from, to nodekey.Public, msg []byte) []byte
	sent    int
}

func newSignalNet() *signalNet { return &signalNet{byK: map[nodekey.Public]*Transport{}} }

func (n *signalNet) sender(self nodekey.Public) func(nodekey.Public, []byte) error {
	return func(to nodekey.Public, msg []byte) error {
		n.mu.Lock()
		dst, drop, rewrite := n.byK[to], n.drop, n.rewrite
		n.sent++
		n.mu.Unlock()
		if dst == nil || (drop != nil && drop(self, to, msg)) {
			return nil
		}
		msg = append([]byte(nil), msg...)
		if rewrite != nil {
			msg = rewrite(self, to, msg)
		}
		_ = dst.HandleSignal(self, msg)
		return nil
	}
}

func (n *signalNet) add(tr *Transport) {
	n.mu.Lock()
	n.byK[tr.self] = tr
	n.mu.Unlock()
}

// newLoopback makes a transport on 127.0.0.1 wired to n.
func newLoopback(t testing.TB, n *signalNet, key nodekey.Private, mod func(*Config)) *Transport {
	t.Helper()
	cfg := Config{
		PrivateKey: key,
		ListenAddr: netip.MustParseAddr("127.0.0.1"),
		Signal:     n.sender(key.Public()),
		Logger:     testLogger(t).With("node", key.Public().ShortString()),
	}
	if mod != nil {
		mod(&cfg)
	}
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	n.add(tr)
	return tr
}

// waitState polls until peer's path is in state want.
func waitState(t testing.TB, tr *Transport, peer nodekey.Public, want PathState, timeout time.Duration) PathInfo {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pi, _ := tr.PathInfo(peer)
		if pi.State == want {
			return pi
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: path to %s is %v after %v, want %v", tr.self.ShortString(), peer.ShortString(), pi.State, timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
