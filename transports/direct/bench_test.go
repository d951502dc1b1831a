package direct

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/testkit"
)

// benchPacketSize is an inner IPv4 packet the size of the overlay MTU.
const benchPacketSize = 1280

// benchWindow bounds packets in flight so the benchmark measures the path,
// not how fast a flood overflows socket buffers; benchQuiet is how long a
// silent receiver means the window's missing packets were lost.
const (
	benchWindow = 256
	benchQuiet  = 200 * time.Millisecond
)

func udpPacket(src, dst netip.Addr, size int) []byte {
	p := make([]byte, size)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(size))
	p[8], p[9] = 64, 17
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	return p
}

// pump sends b.N packets from a to b with at most benchWindow in flight and
// returns how many were lost.
func pump(b *testing.B, from, to *tuntest.ChannelTUN, pkt []byte) int {
	b.SetBytes(int64(len(pkt)))
	lost, inflight := 0, 0
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		for inflight < benchWindow && sent < b.N {
			from.Outbound <- pkt
			inflight++
			sent++
		}
		select {
		case <-to.Inbound:
			inflight--
		case <-time.After(benchQuiet):
			lost += inflight
			inflight = 0
		}
	}
	for inflight > 0 {
		select {
		case <-to.Inbound:
			inflight--
		case <-time.After(benchQuiet):
			lost += inflight
			inflight = 0
		}
	}
	b.StopTimer()
	return lost
}

// BenchmarkWireGuardThroughput compares WireGuard over the direct
// transport (Bind, demux, recvmmsg/sendmmsg) with plain wireguard-go over
// its default Bind, both between two in-process devices on loopback in the
// same run: the ratio is the cost of our Bind and demux.
func BenchmarkWireGuardThroughput(b *testing.B) {
	b.Run("direct", func(b *testing.B) {
		n := newSignalNet()
		x, y := newWGNode(b, n, "100.64.0.1"), newWGNode(b, n, "100.64.0.2")
		connect(b, x, y)
		waitState(b, x.tr, y.key.Public(), StateDirect, 20*time.Second)
		waitState(b, y.tr, x.key.Public(), StateDirect, 20*time.Second)
		pkt := udpPacket(x.ip, y.ip, benchPacketSize)
		warm(b, x.tun, y.tun, pkt)
		lost := pump(b, x.tun, y.tun, pkt)
		b.ReportMetric(float64(lost)/float64(b.N)*100, "%lost")
		if p := x.bind.PathTo(y.key.Public()).Name; p != Name {
			b.Fatalf("benchmark ran on path %q", p)
		}
	})
	b.Run("stdbind", func(b *testing.B) {
		x, y := newStdNode(b, "100.64.0.1"), newStdNode(b, "100.64.0.2")
		stdConnect(b, x, y)
		stdConnect(b, y, x)
		pkt := udpPacket(x.ip, y.ip, benchPacketSize)
		warm(b, x.tun, y.tun, pkt)
		lost := pump(b, x.tun, y.tun, pkt)
		b.ReportMetric(float64(lost)/float64(b.N)*100, "%lost")
	})
}

// warm sends until one packet crosses, so the handshake is not measured.
func warm(b *testing.B, from, to *tuntest.ChannelTUN, pkt []byte) {
	b.Helper()
	deadline := time.After(20 * time.Second)
	for {
		from.Outbound <- pkt
		select {
		case <-to.Inbound:
			return
		case <-time.After(300 * time.Millisecond):
		case <-deadline:
			b.Fatal("no packet crossed")
		}
	}
}

type stdNode struct {
	key  nodekey.Private
	ip   netip.Addr
	tun  *tuntest.ChannelTUN
	dev  *device.Device
	port string
}

func newStdNode(b *testing.B, ip string) *stdNode {
	b.Helper()
	s := &stdNode{key: testkit.Key(b), ip: netip.MustParseAddr(ip), tun: tuntest.NewChannelTUN()}
	s.dev = device.NewDevice(s.tun.TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelError, ""))
	b.Cleanup(s.dev.Close)
	if err := s.dev.IpcSet("private_key=" + s.key.Hex() + "\nlisten_port=0\n"); err != nil {
		b.Fatal(err)
	}
	if err := s.dev.Up(); err != nil {
		b.Fatal(err)
	}
	get, err := s.dev.IpcGet()
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(get, "\n") {
		if v, ok := strings.CutPrefix(l, "listen_port="); ok {
			s.port = v
		}
	}
	return s
}

func stdConnect(b *testing.B, self, peer *stdNode) {
	b.Helper()
	cfg := fmt.Sprintf("public_key=%s\nendpoint=127.0.0.1:%s\nallowed_ip=%s/32\n", peer.key.Public().Hex(), peer.port, peer.ip)
	if err := self.dev.IpcSet(cfg); err != nil {
		b.Fatal(err)
	}
}
