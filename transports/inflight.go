package transports

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
)

// The in-flight bounds. wireguard-go holds every packet between the
// adapter and the network in a buffer of its largest message, 64 KiB,
// whatever the packet's size, and its queues hold up to 1024 batches each
// way. Nothing in it waits for the slower stage: when decryption or the
// adapter is slower than the socket (a kernel TUN under a fast sender), or
// encryption and sending slower than the adapter's reads (the receiver's
// ACKs while its CPU decrypts), those queues fill up to the TCP window,
// thousands of ~1.3 KB packets each pinning 64 KiB, and a node's heap grew
// to 130-220 MiB. So the Bind counts, each way, the data packets the device
// holds:
//
//   - in: WireGuard data messages its receive functions handed to the
//     device, less those the device wrote to the adapter (Bind.Written). A
//     receive function waits before reading more while inflightLimit are
//     outstanding; meanwhile packets wait in the socket's kernel buffer or
//     the Bind's inbox, which are bounded and drop when full, as a NIC's
//     ring does, and the sender's TCP slows down.
//   - out: packets the device read from the adapter, less the data
//     messages it sent (Bind.Send). The adapter's Read waits the same way;
//     packets wait in the adapter (the kernel's TUN queue, gVisor's
//     outbound ring), which is bounded too.
//
// Some packets never complete: replays (the relay copy of a tentative
// direct path's packets), packets for an unknown session or peer, ones
// AllowedIPs refuses. They would leak out of the count, so a wait ends
// anyway once nothing has completed for inflightIdle: everything still
// counted then is gone, and the count starts again from zero. A leaked
// count costs a pause of inflightIdle, never a stall.
const (
	// inflightLimit is the count at which reads wait, each way. A read
	// takes up to a batch more (128 with a kernel TUN, 64 in userspace:
	// Bind.BatchSize), so at most 256 buffers of 64 KiB (16 MiB) are held,
	// ~330 KB of packets: a couple of milliseconds at gigabit rates.
	inflightLimit = 128
	// inflightIdle is how long nothing may complete before a waiting read
	// takes the count to be leaked packets.
	inflightIdle = 2 * time.Millisecond
)

// inflight counts the packets the device holds one way.
type inflight struct {
	n      atomic.Int64
	resets atomic.Uint64 // waits ended by inflightIdle
	idle   time.Duration // inflightIdle if zero (tests set it)

	mu   sync.Mutex
	wake chan struct{} // closed by written while receive functions wait; nil when none do
}

// addData counts the data packets among the first n of a received batch.
func (f *inflight) addData(pkts [][]byte, sizes []int, n int) {
	c := 0
	for i := range n {
		if isDataPacket(pkts[i][:sizes[i]]) {
			c++
		}
	}
	f.add(c)
}

// add counts n more packets.
func (f *inflight) add(n int) {
	if n > 0 {
		f.n.Add(int64(n))
	}
}

// doneData takes the data packets among pkts off the count.
func (f *inflight) doneData(pkts [][]byte) {
	c := 0
	for _, p := range pkts {
		if isDataPacket(p) {
			c++
		}
	}
	if c > 0 {
		f.done(c)
	}
}

// isDataPacket reports whether pkt is a WireGuard transport data message
// with a payload: what the device writes to the adapter. A keepalive (no
// payload) and handshake messages stay in the device.
func isDataPacket(pkt []byte) bool {
	const transportHeader, tagSize = 16, 16
	return len(pkt) > transportHeader+tagSize && pkt[0] == 4 && pkt[1] == 0 && pkt[2] == 0 && pkt[3] == 0
}

// done takes n packets off the count and wakes the waiting reads.
func (f *inflight) done(n int) {
	for {
		v := f.n.Load()
		if f.n.CompareAndSwap(v, max(0, v-int64(n))) {
			break
		}
	}
	f.mu.Lock()
	if f.wake != nil {
		close(f.wake)
		f.wake = nil
	}
	f.mu.Unlock()
}

// wait returns when fewer than inflightLimit packets are outstanding, when
// nothing has completed for inflightIdle (the count is then reset), or
// when stop closes.
func (f *inflight) wait(stop <-chan struct{}) {
	if f.n.Load() < inflightLimit {
		return
	}
	idle := f.idle
	if idle == 0 {
		idle = inflightIdle
	}
	t := time.NewTimer(idle)
	defer t.Stop()
	for {
		f.mu.Lock()
		if f.n.Load() < inflightLimit {
			f.mu.Unlock()
			return
		}
		if f.wake == nil {
			f.wake = make(chan struct{})
		}
		wake := f.wake
		f.mu.Unlock()
		select {
		case <-wake:
			t.Reset(idle)
		case <-t.C:
			f.n.Store(0)
			f.resets.Add(1)
			return
		case <-stop:
			return
		}
	}
}

// gate wraps a receive function so that it waits for the adapter before
// reading and counts what it hands to the device.
func (f *inflight) gate(fn conn.ReceiveFunc, stop <-chan struct{}) conn.ReceiveFunc {
	return func(pkts [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		f.wait(stop)
		n, err := fn(pkts, sizes, eps)
		f.addData(pkts, sizes, n)
		return n, err
	}
}

// WrapDevice returns dev counted for the Bind's in-flight bounds: its Read
// waits while the device holds too many packets read before and not yet
// sent, and its Write tells the Bind how many received packets the device
// handed to the adapter. The node gives the wrapped device to
// wireguard-go, the only one to read and write it.
func WrapDevice(dev tun.Device, b *Bind) tun.Device {
	return &countedDevice{Device: dev, b: b, closed: make(chan struct{})}
}

type countedDevice struct {
	tun.Device
	b         *Bind
	closeOnce sync.Once
	closed    chan struct{}
}

func (d *countedDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.b.out.wait(d.closed)
	n, err := d.Device.Read(bufs, sizes, offset)
	d.b.out.add(n)
	return n, err
}

func (d *countedDevice) Write(bufs [][]byte, offset int) (int, error) {
	n, err := d.Device.Write(bufs, offset)
	d.b.in.done(len(bufs))
	return n, err
}

// Close closes the device; a Read waiting for the Bind returns at once
// (and then gets the device's own error).
func (d *countedDevice) Close() error {
	d.closeOnce.Do(func() { close(d.closed) })
	return d.Device.Close()
}
