package kernel

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/netlab"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitLong bounds waits for things that should happen; it only prevents
// hangs, nothing asserts speed.
const waitLong = 10 * time.Second

// testNS gives the test an isolated network namespace: no TUN test ever
// touches the root namespace.
func testNS(t *testing.T) *netlab.Host {
	t.Helper()
	return netlab.New(t).Host("tun", nil)
}

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// create runs Create inside h's namespace.
func create(h *netlab.Host, cfg Config) (*Device, error) {
	var d *Device
	err := h.Do(func() error {
		var err error
		d, err = Create(cfg)
		return err
	})
	return d, err
}

// mustCreate creates a device in h and closes it at the end of the test.
// It consumes the device's events, as wireguard-go's device would.
func mustCreate(t *testing.T, h *netlab.Host, cfg Config) *Device {
	t.Helper()
	d, err := create(h, cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range d.TUN().Events() {
		}
	}()
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case <-drained:
		case <-time.After(waitLong):
			t.Errorf("the TUN's event channel was not closed by Close")
		}
	})
	return d
}

// nlHandle is a netlink handle inside h's namespace.
func nlHandle(t *testing.T, h *netlab.Host) *netlink.Handle {
	t.Helper()
	nl, err := netlink.NewHandleAt(h.NetNS())
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(nl.Close)
	return nl
}

// sh runs an ip command line inside h, failing the test on error.
func sh(t *testing.T, h *netlab.Host, cmdline string) {
	t.Helper()
	f := strings.Fields(cmdline)
	if out, err := h.Run(context.Background(), f[0], f[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", cmdline, err, out)
	}
}
