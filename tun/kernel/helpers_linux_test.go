package kernel

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
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

// tunOffset is the headroom wireguard-go's device leaves before each packet
// (its transport header); the TUN needs at least 10 bytes for the virtio
// header when offloads are on.
const tunOffset = 16

var (
	nodeV4 = netip.MustParsePrefix("100.64.1.2/10")
	nodeV6 = netip.MustParsePrefix("fd7a:115c:a1e0::1:2/48")
	peerV4 = netip.MustParseAddr("100.64.9.9")
	peerV6 = netip.MustParseAddr("fd7a:115c:a1e0::9:9")
)

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

// udpPacket builds an IPv4 or IPv6 UDP packet with correct checksums,
// preceded by headroom bytes of zeroes.
func udpPacket(headroom int, src, dst netip.AddrPort, payload []byte) []byte {
	udpLen := 8 + len(payload)
	var ip []byte
	if src.Addr().Is4() {
		ip = make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+udpLen))
		ip[8] = 64 // TTL
		ip[9] = 17 // UDP
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], ^sum16(0, ip))
	} else {
		ip = make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(udpLen))
		ip[6] = 17 // next header: UDP
		ip[7] = 64 // hop limit
		s, d := src.Addr().As16(), dst.Addr().As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
	}
	udp := make([]byte, udpLen)
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(udpLen))
	copy(udp[8:], payload)

	// Pseudo-header (RFC 768 / RFC 8200 §8.1): addresses, protocol, length.
	pseudo := uint32(sum16(0, src.Addr().AsSlice())) + uint32(sum16(0, dst.Addr().AsSlice()))
	pseudo += 17 + uint32(udpLen)
	c := ^sum16(pseudo, udp)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], c)

	pkt := make([]byte, headroom, headroom+len(ip)+udpLen)
	pkt = append(pkt, ip...)
	return append(pkt, udp...)
}

// sum16 adds b as big-endian 16-bit words to the one's-complement sum acc
// and folds it.
func sum16(acc uint32, b []byte) uint16 {
	for len(b) >= 2 {
		acc += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}

// parsedUDP is the part of a UDP packet the tests check.
type parsedUDP struct {
	src, dst netip.AddrPort
	payload  []byte
}

// parseUDP decodes an IPv4 or IPv6 (no extension headers) UDP packet.
func parseUDP(pkt []byte) (parsedUDP, bool) {
	if len(pkt) < 1 {
		return parsedUDP{}, false
	}
	var src, dst netip.Addr
	var udp []byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 || pkt[9] != 17 {
			return parsedUDP{}, false
		}
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < 20 || len(pkt) < ihl+8 {
			return parsedUDP{}, false
		}
		src = netip.AddrFrom4([4]byte(pkt[12:16]))
		dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		udp = pkt[ihl:]
	case 6:
		if len(pkt) < 48 || pkt[6] != 17 {
			return parsedUDP{}, false
		}
		src = netip.AddrFrom16([16]byte(pkt[8:24]))
		dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		udp = pkt[40:]
	default:
		return parsedUDP{}, false
	}
	n := int(binary.BigEndian.Uint16(udp[4:]))
	if n < 8 || n > len(udp) {
		return parsedUDP{}, false
	}
	return parsedUDP{
		src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(udp[0:])),
		dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(udp[2:])),
		payload: udp[8:n],
	}, true
}
