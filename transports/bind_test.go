package transports

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/testkit"
)

// memTransport is an in-memory transport: Send delivers straight into the
// Bind of the peer it is wired to. Faults (unreachable, failing sends) are
// switched on per test.
type memTransport struct {
	name string
	self nodekey.Public

	mu      sync.Mutex
	peers   map[nodekey.Public]*Bind
	down    bool
	failErr error
	sent    int
}

func newMem(name string, self nodekey.Public) *memTransport {
	return &memTransport{name: name, self: self, peers: map[nodekey.Public]*Bind{}}
}

func (m *memTransport) Name() string { return m.name }

func (m *memTransport) Reachable(p nodekey.Public) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.peers[p]
	return ok && !m.down
}

func (m *memTransport) Send(p nodekey.Public, pkt []byte) error {
	m.mu.Lock()
	dst, err := m.peers[p], m.failErr
	if err == nil {
		m.sent++
	}
	m.mu.Unlock()
	if err != nil {
		return err
	}
	dst.Deliver(m.self, pkt) // Deliver copies
	return nil
}

func (m *memTransport) set(f func(m *memTransport)) {
	m.mu.Lock()
	f(m)
	m.mu.Unlock()
}

func (m *memTransport) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sent
}

func TestBindPathSelection(t *testing.T) {
	a, b := testkit.Key(t).Public(), testkit.Key(t).Public()
	errBoom := errors.New("boom")
	tests := []struct {
		name      string
		setup     func(primary, fallback *memTransport)
		wantPath  string
		wantErrIs error
	}{
		{"primary preferred", func(p, f *memTransport) {}, "primary", nil},
		{"primary unreachable", func(p, f *memTransport) { p.down = true }, "fallback", nil},
		{"primary send fails", func(p, f *memTransport) { p.failErr = errBoom }, "fallback", nil},
		{"nothing reachable", func(p, f *memTransport) { p.down, f.down = true, true }, "", ErrNoPath},
		{"every send fails", func(p, f *memTransport) { p.failErr, f.failErr = errBoom, errBoom }, "", errBoom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sender, receiver := NewBind(BindConfig{}), NewBind(BindConfig{})
			fns, _, err := receiver.Open(0)
			if err != nil {
				t.Fatal(err)
			}
			defer receiver.Close()
			p, f := newMem("primary", a), newMem("fallback", a)
			p.peers[b], f.peers[b] = receiver, receiver
			tt.setup(p, f)
			sender.SetTransports(p, f)

			err = sender.Send([][]byte{[]byte("one"), []byte("two")}, Endpoint{Key: b})
			if tt.wantErrIs != nil {
				if !errors.Is(err, tt.wantErrIs) {
					t.Fatalf("Send err = %v, want %v", err, tt.wantErrIs)
				}
				if got := sender.Stats().DropsNoPath; got != 2 {
					t.Fatalf("DropsNoPath = %d, want 2", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := sender.PathTo(b).Name; got != tt.wantPath {
				t.Fatalf("path = %q, want %q", got, tt.wantPath)
			}
			pkts, sizes, eps := make([][]byte, 8), make([]int, 8), make([]conn.Endpoint, 8)
			for i := range pkts {
				pkts[i] = make([]byte, 64)
			}
			n, err := fns[0](pkts, sizes, eps)
			if err != nil || n != 2 {
				t.Fatalf("receive: n=%d err=%v, want both packets in one batch", n, err)
			}
			if string(pkts[0][:sizes[0]]) != "one" || string(pkts[1][:sizes[1]]) != "two" {
				t.Fatalf("received %q %q", pkts[0][:sizes[0]], pkts[1][:sizes[1]])
			}
			if eps[0].(Endpoint).Key != a {
				t.Fatalf("endpoint = %v, want sender key", eps[0].DstToString())
			}
		})
	}
}

func TestBindCloseUnblocksReceive(t *testing.T) {
	b := NewBind(BindConfig{})
	fns, _, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Open(0); !errors.Is(err, conn.ErrBindAlreadyOpen) {
		t.Fatalf("second Open: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := fns[0]([][]byte{make([]byte, 10)}, make([]int, 1), make([]conn.Endpoint, 1))
		done <- err
	}()
	b.Close()
	b.Close() // idempotent
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("receive after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("receive did not return after Close")
	}
	// Reopening works, as the device does on a port change.
	if _, _, err := b.Open(0); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	b.Close()
}

func TestBindDeliverBounded(t *testing.T) {
	b := NewBind(BindConfig{})
	k := testkit.Key(t).Public()
	b.Deliver(k, []byte("x"))
	if got := b.Stats().DropsClosed; got != 1 {
		t.Fatalf("DropsClosed = %d, want 1", got)
	}
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for range inboundQueue + 10 {
		b.Deliver(k, []byte("x"))
	}
	if got := b.Stats().DropsQueueFull; got != 10 {
		t.Fatalf("DropsQueueFull = %d, want 10", got)
	}
}

// openBind opens a Bind with no transports, closed at cleanup, and returns
// its receive function.
func openBind(tb testing.TB) (*Bind, conn.ReceiveFunc) {
	tb.Helper()
	b := NewBind(BindConfig{})
	fns, _, err := b.Open(0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	return b, fns[0]
}

// TestBindDeliverCopies: the caller of Deliver keeps its buffer (a
// transport's reader reuses it for the next packet), for pooled and
// oversized packets alike.
func TestBindDeliverCopies(t *testing.T) {
	b, recv := openBind(t)
	k := testkit.Key(t).Public()
	for _, n := range []int{1, InboundBufferSize, InboundBufferSize + 1, 9100} {
		buf := bytes.Repeat([]byte{0xa5}, n)
		b.Deliver(k, buf)
		clear(buf) // the reader's next packet
		pkts, sizes, eps := [][]byte{make([]byte, 10000)}, []int{0}, []conn.Endpoint{nil}
		if got, err := recv(pkts, sizes, eps); err != nil || got != 1 {
			t.Fatalf("%d bytes: receive = %d, %v", n, got, err)
		}
		if !bytes.Equal(pkts[0][:sizes[0]], bytes.Repeat([]byte{0xa5}, n)) || eps[0].(Endpoint).Key != k {
			t.Fatalf("%d bytes: received %d bytes, changed by the caller's reuse", n, sizes[0])
		}
	}
}

// BenchmarkBindDeliver is the Bind's half of the receive path: a
// transport's reader delivers 1400-byte packets, the device reads them in
// batches.
func BenchmarkBindDeliver(b *testing.B) {
	bind, recv := openBind(b)
	k := testkit.Key(b).Public()
	pkts := make([][]byte, conn.IdealBatchSize)
	for i := range pkts {
		pkts[i] = make([]byte, 2048)
	}
	sizes := make([]int, len(pkts))
	eps := make([]conn.Endpoint, len(pkts))
	pkt := make([]byte, 1400)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for i := 0; i < b.N; {
		n := min(b.N-i, len(pkts))
		for range n {
			bind.Deliver(k, pkt)
		}
		for got := 0; got < n; {
			m, err := recv(pkts, sizes, eps)
			if err != nil {
				b.Fatal(err)
			}
			got += m
		}
		i += n
	}
}

func TestParseEndpoint(t *testing.T) {
	k := testkit.Key(t).Public()
	for _, s := range []string{k.Hex(), k.String()} {
		ep, err := ParseEndpoint(s)
		if err != nil || ep.Key != k {
			t.Fatalf("ParseEndpoint(%q) = %v, %v", s, ep, err)
		}
	}
	if _, err := ParseEndpoint("1.2.3.4:51820"); err == nil {
		t.Fatal("ip:port accepted as a key endpoint")
	}
	if ep := (Endpoint{Key: k}); ep.DstToString() != k.Hex() || !bytes.Equal(ep.DstToBytes(), k[:]) {
		t.Fatal("endpoint strings do not name the key")
	}
}

// TestBindCarriesWireGuard runs two real wireguard-go devices over Binds
// joined by in-memory transports, pings across, then takes the primary path
// away mid-stream: the session must survive on the fallback with no new
// handshake.
func TestBindCarriesWireGuard(t *testing.T) {
	ka, kb := testkit.Key(t), testkit.Key(t)
	ipA, ipB := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	bindA, bindB := NewBind(BindConfig{}), NewBind(BindConfig{})
	pA, fA := newMem("primary", ka.Public()), newMem("fallback", ka.Public())
	pB, fB := newMem("primary", kb.Public()), newMem("fallback", kb.Public())
	pA.peers[kb.Public()], fA.peers[kb.Public()] = bindB, bindB
	pB.peers[ka.Public()], fB.peers[ka.Public()] = bindA, bindA
	bindA.SetTransports(pA, fA)
	bindB.SetTransports(pB, fB)

	tunA, tunB := tuntest.NewChannelTUN(), tuntest.NewChannelTUN()
	logger := device.NewLogger(device.LogLevelError, "")
	devA := device.NewDevice(tunA.TUN(), bindA, logger)
	devB := device.NewDevice(tunB.TUN(), bindB, logger)
	defer devA.Close()
	defer devB.Close()
	cfg := func(self nodekey.Private, peer nodekey.Public, peerIP netip.Addr) string {
		return fmt.Sprintf("private_key=%s\npublic_key=%s\nendpoint=%s\nallowed_ip=%s/32\n",
			self.Hex(), peer.Hex(), peer.Hex(), peerIP)
	}
	if err := devA.IpcSet(cfg(ka, kb.Public(), ipB)); err != nil {
		t.Fatal(err)
	}
	if err := devB.IpcSet(cfg(kb, ka.Public(), ipA)); err != nil {
		t.Fatal(err)
	}
	if err := devA.Up(); err != nil {
		t.Fatal(err)
	}
	if err := devB.Up(); err != nil {
		t.Fatal(err)
	}

	ping := func() {
		t.Helper()
		want := tuntest.Ping(ipB, ipA)
		tunA.Outbound <- want
		select {
		case got := <-tunB.Inbound:
			if !bytes.Equal(got, want) {
				t.Fatalf("packet changed in transit")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("ping did not arrive")
		}
	}
	ping()
	if got := bindA.PathTo(kb.Public()).Name; got != "primary" {
		t.Fatalf("path = %q, want primary", got)
	}
	before := fA.count()
	sentBefore := bindA.PathTo(kb.Public()).Packets
	if sentBefore == 0 {
		t.Fatal("path counts no packet after a ping went out on it")
	}
	pA.set(func(m *memTransport) { m.down = true })
	ping()
	if got := bindA.PathTo(kb.Public()); got.Name != "fallback" || got.Changes != 2 {
		t.Fatalf("path after primary loss = %+v, want fallback after 2 changes", got)
	}
	if got := bindA.PathTo(kb.Public()).Packets; got <= sentBefore {
		t.Fatalf("packets to the peer = %d after another ping, want more than %d", got, sentBefore)
	}
	if fA.count() <= before {
		t.Fatal("fallback carried nothing")
	}
}

// batchTransport is a transport with its own receive function and batch
// send, as a socket-owning transport (direct UDP) has.
type batchTransport struct {
	memTransport
	pkts    chan []byte
	opened  int
	stopped int
	batches int
}

func (bt *batchTransport) SendBatch(p nodekey.Public, pkts [][]byte) error {
	bt.mu.Lock()
	bt.batches++
	bt.mu.Unlock()
	for _, pkt := range pkts {
		if err := bt.Send(p, pkt); err != nil {
			return err
		}
	}
	return nil
}

func (bt *batchTransport) OpenReceive() (conn.ReceiveFunc, func()) {
	bt.mu.Lock()
	bt.opened++
	bt.mu.Unlock()
	stopped := make(chan struct{})
	var once sync.Once
	fn := func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		select {
		case p := <-bt.pkts:
			sizes[0] = copy(packets[0], p)
			eps[0] = Endpoint{Key: bt.self}
			return 1, nil
		case <-stopped:
			return 0, net.ErrClosed
		}
	}
	return fn, func() {
		once.Do(func() {
			bt.mu.Lock()
			bt.stopped++
			bt.mu.Unlock()
			close(stopped)
		})
	}
}

func TestBindBatchTransport(t *testing.T) {
	a, peer := testkit.Key(t).Public(), testkit.Key(t).Public()
	receiver := NewBind(BindConfig{})
	rfns, _, err := receiver.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer receiver.Close()
	bt := &batchTransport{memTransport: *newMem("batch", a), pkts: make(chan []byte, 4)}
	bt.peers[peer] = receiver
	plain := newMem("plain", a)

	b := NewBind(BindConfig{})
	b.SetTransports(bt, plain)
	fns, _, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(fns) != 2 || bt.opened != 1 {
		t.Fatalf("Open gave %d receive funcs and opened the batch transport %d times, want 2 and 1", len(fns), bt.opened)
	}
	// The transport's own function delivers its packets.
	bt.pkts <- []byte("own")
	pkts, sizes, eps := [][]byte{make([]byte, 16)}, make([]int, 1), make([]conn.Endpoint, 1)
	if n, err := fns[1](pkts, sizes, eps); err != nil || n != 1 || string(pkts[0][:sizes[0]]) != "own" {
		t.Fatalf("batch receive: n=%d err=%v %q", n, err, pkts[0][:sizes[0]])
	}
	// A batch goes out in one SendBatch call.
	if err := b.Send([][]byte{[]byte("x"), []byte("y"), []byte("z")}, Endpoint{Key: peer}); err != nil {
		t.Fatal(err)
	}
	if bt.batches != 1 || bt.count() != 3 {
		t.Fatalf("SendBatch calls %d, packets %d; want 1 and 3", bt.batches, bt.count())
	}
	rb := [][]byte{make([]byte, 16), make([]byte, 16), make([]byte, 16), make([]byte, 16)}
	if n, err := rfns[0](rb, make([]int, 4), make([]conn.Endpoint, 4)); err != nil || n != 3 {
		t.Fatalf("receiver got n=%d err=%v, want the 3 packets", n, err)
	}
	// Close stops the transport's function, blocked or not.
	done := make(chan error, 1)
	go func() {
		_, err := fns[1](pkts, sizes, eps)
		done <- err
	}()
	b.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("batch receive not stopped by Close")
	}
	if bt.stopped != 1 {
		t.Fatalf("stopped %d times", bt.stopped)
	}
	// Reopening opens it again.
	if fns, _, err := b.Open(0); err != nil || len(fns) != 2 || bt.opened != 2 {
		t.Fatalf("reopen: %d funcs, opened %d, %v", len(fns), bt.opened, err)
	}
	b.Close()
}

// A congested path drops the packet but stays the path: the Bind reports
// success (as a UDP socket with a full queue does) instead of reordering the
// flow onto the next transport.
func TestBindCongestedIsADropNotAFailover(t *testing.T) {
	a, b := testkit.Key(t).Public(), testkit.Key(t).Public()
	sender, receiver := NewBind(BindConfig{}), NewBind(BindConfig{})
	if _, _, err := receiver.Open(0); err != nil {
		t.Fatal(err)
	}
	defer receiver.Close()
	p, f := newMem("primary", a), newMem("fallback", a)
	p.peers[b], f.peers[b] = receiver, receiver
	p.failErr = fmt.Errorf("queue full (%w)", ErrCongested)
	sender.SetTransports(p, f)
	if err := sender.Send([][]byte{[]byte("one"), []byte("two")}, Endpoint{Key: b}); err != nil {
		t.Fatalf("Send on a congested path: %v", err)
	}
	if got := sender.PathTo(b).Name; got != "primary" {
		t.Fatalf("path = %q, want primary", got)
	}
	if st := sender.Stats(); st.DropsCongested != 2 || st.DropsNoPath != 0 || f.count() != 0 {
		t.Fatalf("stats %+v, fallback sent %d; want 2 congestion drops and nothing on the fallback", st, f.count())
	}
}
