package transports

import (
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// wgPacket returns a WireGuard message of type typ and length n.
func wgPacket(typ byte, n int) []byte {
	p := make([]byte, n)
	p[0] = typ
	return p
}

func TestInflightCountsDataPackets(t *testing.T) {
	var f inflight
	batch := [][]byte{
		wgPacket(4, 100), // data
		wgPacket(4, 32),  // keepalive: no payload
		wgPacket(1, 148), // handshake initiation
		wgPacket(4, 1300),
		{0x04, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, // not WireGuard
		wgPacket(4, 1300), // beyond n: not received
	}
	sizes := make([]int, len(batch))
	for i, p := range batch {
		sizes[i] = len(p)
	}
	fn := f.gate(func(pkts [][]byte, sz []int, eps []conn.Endpoint) (int, error) {
		return 5, nil
	}, nil)
	if n, err := fn(batch, sizes, make([]conn.Endpoint, len(batch))); n != 5 || err != nil {
		t.Fatalf("gate returned %d, %v; want the function's 5, nil", n, err)
	}
	if got := f.n.Load(); got != 2 {
		t.Fatalf("counted %d packets in flight, want 2 (data with a payload only)", got)
	}
	f.done(5) // more than counted: the count stays at zero
	if got := f.n.Load(); got != 0 {
		t.Fatalf("after written: %d in flight, want 0", got)
	}
}

// TestInflightWaitsForTheAdapter: at the limit a receive function waits
// until the adapter takes packets, not longer.
func TestInflightWaitsForTheAdapter(t *testing.T) {
	f := inflight{idle: time.Hour}
	f.n.Store(inflightLimit)
	returned := make(chan struct{})
	go func() {
		f.wait(nil)
		close(returned)
	}()
	// Written before the waiter waits only makes it not wait; either way
	// it must return, and without a reset.
	f.done(1)
	<-returned
	if f.resets.Load() != 0 {
		t.Fatalf("%d resets, want 0: the wait ended by the adapter's write", f.resets.Load())
	}
}

// TestInflightWaitBlocks: at the limit, with no write, a wait does not
// return until done closes.
func TestInflightWaitBlocks(t *testing.T) {
	f := inflight{idle: time.Hour}
	f.n.Store(inflightLimit)
	done := make(chan struct{})
	returned := make(chan struct{})
	go func() {
		f.wait(done)
		close(returned)
	}()
	select {
	case <-returned:
		t.Fatal("wait returned at the limit with no write")
	case <-time.After(20 * time.Millisecond):
	}
	close(done)
	<-returned
}

// TestInflightLeakResets: packets the device dropped never come off the
// count; once the adapter is idle the count starts again from zero.
func TestInflightLeakResets(t *testing.T) {
	f := inflight{idle: time.Millisecond}
	f.n.Store(inflightLimit + 10)
	f.wait(nil)
	if got := f.n.Load(); got != 0 {
		t.Fatalf("after an idle wait: %d in flight, want 0", got)
	}
	if f.resets.Load() != 1 {
		t.Fatalf("%d resets, want 1", f.resets.Load())
	}
}

func TestWrapDeviceWriteReports(t *testing.T) {
	b := NewBind(BindConfig{})
	b.in.n.Store(10)
	ch := tuntest.NewChannelTUN()
	dev := WrapDevice(ch.TUN(), b)
	pkt := tuntest.Ping(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"))
	wrote := make(chan error, 1)
	go func() {
		_, err := dev.Write([][]byte{pkt, pkt, pkt}, 0)
		wrote <- err
	}()
	for range 3 {
		<-ch.Inbound
	}
	if err := <-wrote; err != nil {
		t.Fatalf("Write: %v", err)
	}
	if n := b.in.n.Load(); n != 7 {
		t.Fatalf("after writing 3 of 10: %d in flight, want 7", n)
	}
}

// TestWrapDeviceReadWaits: the adapter's Read waits while the device holds
// inflightLimit packets it read before, until the Bind sends data.
func TestWrapDeviceReadWaits(t *testing.T) {
	b := NewBind(BindConfig{})
	b.out.idle = time.Hour
	ch := tuntest.NewChannelTUN()
	dev := WrapDevice(ch.TUN(), b)
	defer dev.Close()
	pkt := tuntest.Ping(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"))
	bufs, sizes := [][]byte{make([]byte, 1500)}, []int{0}
	go func() { ch.Outbound <- pkt }()
	if n, err := dev.Read(bufs, sizes, 0); n != 1 || err != nil {
		t.Fatalf("Read: %d, %v", n, err)
	}
	if got := b.out.n.Load(); got != 1 {
		t.Fatalf("%d packets counted after one read, want 1", got)
	}
	b.out.n.Store(inflightLimit)
	read := make(chan error, 1)
	go func() {
		_, err := dev.Read(bufs, sizes, 0)
		read <- err
	}()
	go func() { ch.Outbound <- pkt }() // taken by the Read once it stops waiting
	select {
	case err := <-read:
		t.Fatalf("Read returned (%v) with %d packets held", err, inflightLimit)
	case <-time.After(20 * time.Millisecond):
	}
	// A keepalive is no data: the Read still waits.
	_ = b.Send([][]byte{wgPacket(4, 32)}, Endpoint{})
	if got := b.out.n.Load(); got != inflightLimit {
		t.Fatalf("a keepalive took the count to %d", got)
	}
	// Sent (here: no path, dropped) data ends the wait.
	_ = b.Send([][]byte{wgPacket(4, 100)}, Endpoint{})
	if err := <-read; err != nil {
		t.Fatalf("Read: %v", err)
	}
}
