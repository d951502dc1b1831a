package netstack

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"testing"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
)

// TestWireGuardDevice runs two wireguard-go devices whose TUNs are Stacks and
// whose Binds are joined in memory: the real consumer of the tun.Device
// contract (offsets, batches, Events, Close) carrying a TCP echo.
func TestWireGuardDevice(t *testing.T) {
	keys := func() (priv, pub string) {
		var k [32]byte
		rand.Read(k[:])
		p, err := curve25519.X25519(k[:], curve25519.Basepoint)
		if err != nil {
			t.Fatal(err)
		}
		return hex.EncodeToString(k[:]), hex.EncodeToString(p)
	}
	privA, pubA := keys()
	privB, pubB := keys()
	binds := bindtest.NewChannelBinds()

	a, err := New(Config{Addrs: []netip.Addr{addrA4, addrA6}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{Addrs: []netip.Addr{addrB4, addrB6}, Logger: quietLogger()})
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	logger := device.NewLogger(device.LogLevelSilent, "")
	devA := device.NewDevice(a, binds[0], logger)
	defer devA.Close() // closes a too
	devB := device.NewDevice(b, binds[1], logger)
	defer devB.Close()

	cfg := func(priv, peerPub string, endpoint int, allowed ...netip.Addr) string {
		s := fmt.Sprintf("private_key=%s\nlisten_port=0\nreplace_peers=true\npublic_key=%s\nendpoint=127.0.0.1:%d\n", priv, peerPub, endpoint)
		for _, ip := range allowed {
			s += fmt.Sprintf("allowed_ip=%s\n", netip.PrefixFrom(ip, ip.BitLen()))
		}
		return s
	}
	if err := devA.IpcSet(cfg(privA, pubB, 1, addrB4, addrB6)); err != nil {
		t.Fatal(err)
	}
	if err := devB.IpcSet(cfg(privB, pubA, 2, addrA4, addrA6)); err != nil {
		t.Fatal(err)
	}
	if err := devA.Up(); err != nil {
		t.Fatal(err)
	}
	if err := devB.Up(); err != nil {
		t.Fatal(err)
	}

	ln, err := b.Listen("tcp", ":443")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	for _, dst := range []string{"100.64.0.2:443", "[fd00::2]:443"} {
		c, err := a.DialContext(testContext(t), "tcp", dst)
		if err != nil {
			t.Fatalf("dial %s through WireGuard: %v", dst, err)
		}
		msg := make([]byte, 1<<20)
		rand.Read(msg)
		roundTrip(t, c, msg)
		c.Close()
	}
}
