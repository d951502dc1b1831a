package direct

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/transports"
)

// memTransport is the "relay" of these tests: Send delivers straight into
// the peer's Bind.
type memTransport struct {
	self nodekey.Public
	mu   sync.Mutex
	dst  map[nodekey.Public]*transports.Bind
	sent int
}

func (m *memTransport) Name() string { return "mem" }
func (m *memTransport) Reachable(p nodekey.Public) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dst[p] != nil
}
func (m *memTransport) Send(p nodekey.Public, pkt []byte) error {
	m.mu.Lock()
	d := m.dst[p]
	m.sent++
	m.mu.Unlock()
	d.Deliver(m.self, bytes.Clone(pkt))
	return nil
}

// wgNode is a transport, a Bind over [direct, mem] and a wireguard-go device.
type wgNode struct {
	key  nodekey.Private
	ip   netip.Addr
	tr   *Transport
	mem  *memTransport
	bind *transports.Bind
	tun  *tuntest.ChannelTUN
	dev  *device.Device
}

func newWGNode(t testing.TB, n *signalNet, ip string) *wgNode {
	t.Helper()
	return newWGNodeOn(t, ip, func(key nodekey.Private, deliver func(nodekey.Public, []byte)) *Transport {
		return newLoopback(t, n, key, func(c *Config) { c.Deliver = deliver })
	})
}

// newWGNodeOn is newWGNode with the direct transport that mk makes (with
// the node's key and the Bind's Deliver).
func newWGNodeOn(t testing.TB, ip string, mk func(key nodekey.Private, deliver func(nodekey.Public, []byte)) *Transport) *wgNode {
	t.Helper()
	w := &wgNode{key: testkit.Key(t), ip: netip.MustParseAddr(ip)}
	w.bind = transports.NewBind(transports.BindConfig{Logger: testLogger(t)})
	w.tr = mk(w.key, w.bind.Deliver)
	w.mem = &memTransport{self: w.key.Public(), dst: map[nodekey.Public]*transports.Bind{}}
	// Transports before Up, so Open picks up the direct ReceiveFunc.
	w.bind.SetTransports(w.tr, w.mem)
	w.tun = tuntest.NewChannelTUN()
	w.dev = device.NewDevice(w.tun.TUN(), w.bind, device.NewLogger(device.LogLevelError, ""))
	t.Cleanup(w.dev.Close)
	if err := w.dev.IpcSet("private_key=" + w.key.Hex() + "\n"); err != nil {
		t.Fatal(err)
	}
	if err := w.dev.Up(); err != nil {
		t.Fatal(err)
	}
	return w
}

// connect makes a and b WireGuard peers of each other and direct-path
// peers.
func connect(t testing.TB, a, b *wgNode) {
	t.Helper()
	for _, p := range [][2]*wgNode{{a, b}, {b, a}} {
		self, peer := p[0], p[1]
		self.mem.mu.Lock()
		self.mem.dst[peer.key.Public()] = peer.bind
		self.mem.mu.Unlock()
		cfg := fmt.Sprintf("public_key=%s\nendpoint=%s\nallowed_ip=%s/32\n",
			peer.key.Public().Hex(), peer.key.Public().Hex(), peer.ip)
		if err := self.dev.IpcSet(cfg); err != nil {
			t.Fatal(err)
		}
		self.tr.AddPeer(peer.key.Public())
	}
}

// ping sends pings from a to b until one arrives (the first may be lost
// while a path dies) or the deadline passes.
func ping(t *testing.T, a, b *wgNode) {
	t.Helper()
	want := tuntest.Ping(b.ip, a.ip)
	deadline := time.After(20 * time.Second)
	for {
		select {
		case a.tun.Outbound <- want:
		case <-deadline:
			t.Fatal("ping not sent")
		}
		select {
		case got := <-b.tun.Inbound:
			if !bytes.Equal(got, want) {
				t.Fatal("packet changed in transit")
			}
			return
		case <-time.After(500 * time.Millisecond):
		case <-deadline:
			t.Fatal("ping did not arrive")
		}
	}
}

// directPair returns two WireGuard nodes with a direct path between them
// that has carried a ping each way.
func directPair(t *testing.T) (a, b *wgNode) {
	t.Helper()
	n := newSignalNet()
	a, b = newWGNode(t, n, "100.64.0.1"), newWGNode(t, n, "100.64.0.2")
	connect(t, a, b)
	waitState(t, a.tr, b.key.Public(), StateDirect, 20*time.Second)
	waitState(t, b.tr, a.key.Public(), StateDirect, 20*time.Second)
	ping(t, a, b)
	ping(t, b, a)
	return a, b
}

// blackholeUntilUnreachable kills the direct path between a and b without
// their sockets noticing and returns how long a took to stop using it.
func blackholeUntilUnreachable(t *testing.T, a, b *wgNode) time.Duration {
	t.Helper()
	cut := time.Now()
	a.tr.stats.blackhole.Store(true)
	b.tr.stats.blackhole.Store(true)
	deadline := time.Now().Add(4 * LossTimeout)
	for a.tr.Reachable(b.key.Public()) {
		if time.Now().After(deadline) {
			t.Fatal("direct path still reachable long after it went silent")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(cut)
}

// lastHandshake reads the device's last handshake time for peer.
func lastHandshake(t *testing.T, d *device.Device, peer nodekey.Public) string {
	t.Helper()
	s, err := d.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	in := false
	sc := bufio.NewScanner(strings.NewReader(s))
	var sec, nsec string
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "public_key":
			in = v == peer.Hex()
		case "last_handshake_time_sec":
			if in {
				sec = v
			}
		case "last_handshake_time_nsec":
			if in {
				nsec = v
			}
		}
	}
	return sec + "." + nsec
}

// pathWait bounds waitPath: the note follows the send by a scheduling
// delay (about a millisecond here); five seconds leave room for a loaded
// machine.
const pathWait = 5 * time.Second

// waitPath waits until bind reports want as the path to peer and returns
// it. A ping that arrived does not mean its sender's Bind has noted the
// path yet: the Bind notes a path after the transport's Send returns, and
// by then the datagram is on the wire; the receiver can decrypt it and
// hand it to its TUN before the sending goroutine gets back from sendmmsg
// (without -race that happened in 2 of 3 runs). Reading PathTo right
// after the ping raced with that note.
func waitPath(t *testing.T, bind *transports.Bind, peer nodekey.Public, want string) transports.Path {
	t.Helper()
	deadline := time.Now().Add(pathWait)
	for {
		got := bind.PathTo(peer)
		if got.Name == want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("path to %s = %+v after %v, want %s", peer.ShortString(), got, pathWait, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWireGuardOverDirect: pings cross on the direct path; when the path is
// black-holed the Bind falls back to the other transport within the loss
// timeout and the WireGuard session carries on without a new handshake;
// when the path heals, traffic returns to direct.
func TestWireGuardOverDirect(t *testing.T) {
	a, b := directPair(t)
	waitPath(t, a.bind, b.key.Public(), Name)
	// A fresh path is tentative: its first packets also go over the other
	// transport, and the pings may have been answered by those copies
	// while the direct ones are still being read. Wait for them rather
	// than read the counters at once.
	for deadline := time.Now().Add(pathWait); a.tr.Stats().WireGuardIn == 0 || b.tr.Stats().WireGuardIn == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no WireGuard packet came in on the direct socket: %+v / %+v", a.tr.Stats(), b.tr.Stats())
		}
	}
	hsA, hsB := lastHandshake(t, a.dev, b.key.Public()), lastHandshake(t, b.dev, a.key.Public())
	a.mem.mu.Lock()
	memBefore := a.mem.sent
	a.mem.mu.Unlock()

	// Kill the path without the sockets noticing.
	took := blackholeUntilUnreachable(t, a, b)
	t.Logf("direct path declared unreachable %v after the cut (LossTimeout %v)", took.Round(time.Millisecond), LossTimeout)
	ping(t, a, b)
	ping(t, b, a)
	waitPath(t, a.bind, b.key.Public(), "mem")
	a.mem.mu.Lock()
	memAfter := a.mem.sent
	a.mem.mu.Unlock()
	if memAfter <= memBefore {
		t.Fatal("fallback carried nothing")
	}
	waitState(t, a.tr, b.key.Public(), StateLost, 4*LossTimeout)

	// Heal: ICE retries with backoff and the Bind returns to direct.
	healed := time.Now()
	a.tr.stats.blackhole.Store(false)
	b.tr.stats.blackhole.Store(false)
	waitState(t, a.tr, b.key.Public(), StateDirect, 2*connectTimeout+retryMax/4)
	waitState(t, b.tr, a.key.Public(), StateDirect, 2*connectTimeout+retryMax/4)
	t.Logf("direct again %v after healing", time.Since(healed).Round(time.Millisecond))
	ping(t, a, b)
	ping(t, b, a)
	if got := waitPath(t, a.bind, b.key.Public(), Name); got.Changes != 3 {
		t.Fatalf("path after healing = %+v, want direct after 3 changes", got)
	}
	if h := lastHandshake(t, a.dev, b.key.Public()); h != hsA {
		t.Fatalf("a: new WireGuard handshake (%s, was %s): the session did not survive the path changes", h, hsA)
	}
	if h := lastHandshake(t, b.dev, a.key.Public()); h != hsB {
		t.Fatalf("b: new WireGuard handshake (%s, was %s)", h, hsB)
	}
}
