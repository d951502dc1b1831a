package direct

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/pion/stun/v4"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/transports"
)

// wgSeq is a WireGuard-shaped data message of size bytes carrying seq.
func wgSeq(seq uint32, size int) []byte {
	b := make([]byte, size)
	b[0] = 4
	binary.LittleEndian.PutUint32(b[8:], seq)
	for i := 16; i < size; i++ {
		b[i] = byte(seq) + byte(i)
	}
	return b
}

func sized(sizes ...int) [][]byte {
	out := make([][]byte, len(sizes))
	for i, n := range sizes {
		out[i] = make([]byte, n)
	}
	return out
}

func repeat(n, size int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = size
	}
	return out
}

// TestFillRuns: a batch becomes one segmented message per run of equal
// sizes (a shorter datagram ends a run), bounded by the kernel's segment
// count and the largest UDP payload; without GSO one message per datagram.
func TestFillRuns(t *testing.T) {
	tests := []struct {
		name  string
		sizes []int
		gso   bool
		want  []int // datagrams per message
	}{
		{"one", []int{100}, true, []int{1}},
		{"run", []int{100, 100, 100}, true, []int{3}},
		{"short tail", []int{100, 100, 50}, true, []int{3}},
		{"short ends run", []int{100, 100, 50, 100}, true, []int{3, 1}},
		{"longer starts run", []int{100, 200, 200}, true, []int{1, 2}},
		{"segment count", repeat(70, 100), true, []int{64, 6}},
		{"payload limit", repeat(50, 1400), true, []int{46, 4}},
		{"empty datagrams", []int{0, 0}, true, []int{1, 1}},
		{"no gso", []int{100, 100, 100}, false, []int{1, 1, 1}},
	}
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb := newSendBatch()
			pkts := sized(tt.sizes...)
			msgs, used := sb.fill(pkts, to, tt.gso)
			if used != len(pkts) || msgs != len(tt.want) {
				t.Fatalf("fill = %d messages for %d datagrams, want %d for %d", msgs, used, len(tt.want), len(pkts))
			}
			next := 0
			for i, want := range tt.want {
				m := sb.ms[i]
				if sb.counts[i] != want || len(m.Buffers) != want || m.Addr != to {
					t.Fatalf("message %d: %d datagrams (%d buffers), want %d", i, sb.counts[i], len(m.Buffers), want)
				}
				if len(pkts[next]) > 0 && &m.Buffers[0][0] != &pkts[next][0] {
					t.Fatalf("message %d does not carry datagram %d in place", i, next)
				}
				seg, ok := segmentCmsg(t, m.OOB)
				switch {
				case want == 1 && ok:
					t.Fatalf("message %d: a single datagram with a UDP_SEGMENT control message", i)
				case want > 1 && (!ok || seg != len(pkts[next])):
					t.Fatalf("message %d: segment size %d (present %v), want %d", i, seg, ok, len(pkts[next]))
				}
				next += want
			}
			sb.release(msgs)
			for _, m := range sb.ms[:msgs] {
				if m.Buffers != nil || m.Addr != nil || m.OOB != nil {
					t.Fatal("release kept references")
				}
			}
		})
	}
}

// segmentCmsg parses a UDP_SEGMENT control message.
func segmentCmsg(t *testing.T, oob []byte) (int, bool) {
	t.Helper()
	if len(oob) == 0 {
		return 0, false
	}
	h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
	if err != nil || len(rest) != 0 || h.Level != unix.SOL_UDP || h.Type != unix.UDP_SEGMENT || len(data) != 2 {
		t.Fatalf("bad control message % x (%v)", oob, err)
	}
	return int(binary.NativeEndian.Uint16(data)), true
}

func TestGROSegmentSize(t *testing.T) {
	gro := func(v uint32) []byte {
		b := make([]byte, unix.CmsgSpace(4))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = unix.SOL_UDP, unix.UDP_GRO
		h.SetLen(unix.CmsgLen(4))
		binary.NativeEndian.PutUint32(b[unix.CmsgLen(0):], v)
		return b
	}
	other := putSegmentSize(make([]byte, segCmsgSize), 1200) // not UDP_GRO
	tests := []struct {
		name string
		oob  []byte
		want int
	}{
		{"none", nil, 0},
		{"gro", gro(1312), 1312},
		{"other first", append(bytes.Clone(other), gro(100)...), 100},
		{"other only", other, 0},
		{"garbage", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 0},
		{"cut header", gro(1312)[:10], 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := groSegmentSize(tt.oob); got != tt.want {
				t.Fatalf("groSegmentSize = %d, want %d", got, tt.want)
			}
		})
	}
}

func FuzzGROSegmentSize(f *testing.F) {
	f.Add(putSegmentSize(make([]byte, segCmsgSize), 1200))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if s := groSegmentSize(b); s < 0 {
			t.Fatalf("negative segment size %d", s)
		}
	})
}

func TestGSOFailed(t *testing.T) {
	wrap := func(e error) error { return &net.OpError{Op: "write", Err: os.NewSyscallError("sendmmsg", e)} }
	tests := []struct {
		err            error
		retry, disable bool
	}{
		{wrap(unix.EIO), true, true},
		{wrap(unix.EINVAL), true, false},
		{wrap(unix.EMSGSIZE), true, false},
		{wrap(unix.ECONNREFUSED), false, false},
		{errors.New("other"), false, false},
	}
	for _, tt := range tests {
		if r, d := gsoFailed(tt.err); r != tt.retry || d != tt.disable {
			t.Errorf("gsoFailed(%v) = %v, %v; want %v, %v", tt.err, r, d, tt.retry, tt.disable)
		}
	}
}

// TestGSOArrivesCoalesced: a batch sent with segmentation reaches a GRO
// socket on loopback as one buffer with the segment size, byte for byte.
func TestGSOArrivesCoalesced(t *testing.T) {
	a, _, _ := newStatic(t)
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, gro := enableOffload(c)
	if !a.gso.Load() || !gro {
		t.Skip("no UDP segmentation offload on this kernel")
	}
	peer := testkit.Key(t).Public()
	if err := a.SetStatic(peer, c.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	var pkts [][]byte
	for i := range 10 {
		pkts = append(pkts, wgSeq(uint32(i), 300))
	}
	pkts = append(pkts, wgSeq(10, 100))
	if err := a.SendBatch(peer, pkts); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(staticWait))
	buf, oob := make([]byte, recvBufSize), make([]byte, oobSize)
	n, oobn, flags, _, err := c.ReadMsgUDP(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	if flags&recvTruncated != 0 {
		t.Fatalf("truncated: flags %#x", flags)
	}
	if seg := groSegmentSize(oob[:oobn]); n != 3100 || seg != 300 {
		t.Fatalf("got %d bytes with segment size %d, want 3100 with 300", n, seg)
	}
	if !bytes.Equal(buf[:n], bytes.Join(pkts, nil)) {
		t.Fatal("payload differs from the datagrams sent")
	}
}

// pairStatic makes two ICE-less transports with static paths to each
// other.
func pairStatic(t *testing.T) (a, b *Transport, bDelivered chan received) {
	t.Helper()
	a, _, _ = newStatic(t)
	b, bDelivered, _ = newStatic(t)
	if err := a.SetStatic(b.self, b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := b.SetStatic(a.self, a.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	return a, b, bDelivered
}

// recvBatch is a device-shaped batch for a ReceiveFunc.
type recvBatch struct {
	bufs  [][]byte
	sizes []int
	eps   []conn.Endpoint
}

func newRecvBatch(n int) *recvBatch {
	rb := &recvBatch{bufs: make([][]byte, n), sizes: make([]int, n), eps: make([]conn.Endpoint, n)}
	for i := range rb.bufs {
		rb.bufs[i] = make([]byte, recvBufSize)
	}
	return rb
}

// openReceive opens b's ReceiveFunc and waits until it, not the idle
// reader, reads the socket: a from a sends probes until one comes back
// through it. stop runs at the end of the test, or after staticWait so a
// lost datagram fails the test instead of hanging it.
func openReceive(t *testing.T, a, b *Transport) conn.ReceiveFunc {
	t.Helper()
	fn, stop := b.OpenReceive()
	watchdog := time.AfterFunc(staticWait, stop)
	t.Cleanup(func() { watchdog.Stop(); stop() })
	rb := newRecvBatch(transportsBatch)
	probe := wgSeq(1<<31, 64)
	for {
		if err := a.SendBatch(b.self, [][]byte{probe}); err != nil {
			t.Fatal(err)
		}
		n, err := fn(rb.bufs, rb.sizes, rb.eps)
		if err != nil {
			t.Fatalf("probe not received: %v", err)
		}
		for i := range n {
			if bytes.Equal(rb.bufs[i][:rb.sizes[i]], probe) {
				return fn
			}
		}
	}
}

// TestReceiveSplitsCoalesced: the device's ReceiveFunc splits a coalesced
// run into one packet per datagram, in order, attributed to the peer, and
// diverts a STUN datagram that ends the run to ICE.
func TestReceiveSplitsCoalesced(t *testing.T) {
	a, b, _ := pairStatic(t)
	fn := openReceive(t, a, b)
	var pkts [][]byte
	const count = 40
	for i := range count {
		pkts = append(pkts, wgSeq(uint32(i), 200))
	}
	binding := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw
	pkts = append(pkts, binding)
	stunBefore := b.Stats().STUNIn
	if err := a.SendBatch(b.self, pkts); err != nil {
		t.Fatal(err)
	}
	rb := newRecvBatch(transportsBatch)
	for got := 0; got < count; {
		n, err := fn(rb.bufs, rb.sizes, rb.eps)
		if err != nil {
			t.Fatalf("after %d packets: %v", got, err)
		}
		for i := range n {
			if !bytes.Equal(rb.bufs[i][:rb.sizes[i]], pkts[got]) {
				t.Fatalf("packet %d: %d bytes, differs from datagram %d sent", got, rb.sizes[i], got)
			}
			if rb.eps[i] != (transports.Endpoint{Key: a.self}) {
				t.Fatalf("packet %d attributed to %v", got, rb.eps[i])
			}
			got++
		}
	}
	deadline := time.Now().Add(staticWait)
	for b.Stats().STUNIn == stunBefore {
		if time.Now().After(deadline) {
			t.Fatal("the STUN datagram did not reach ICE")
		}
		// It travels in the same run unless the kernel did not coalesce.
		n, err := fn(rb.bufs, rb.sizes, rb.eps)
		if err != nil || n != 0 {
			t.Fatalf("unexpected read: %d packets, %v", n, err)
		}
	}
	if st := b.Stats(); st.DropsBatchFull != 0 || st.DropsOther != 0 {
		t.Fatalf("drops: %+v", st)
	}
}

// TestReceiveShortBatch: a run longer than a (short) batch can hold fills
// the batch and counts the rest as dropped, never overwriting a datagram
// not yet split.
func TestReceiveShortBatch(t *testing.T) {
	a, b, _ := pairStatic(t)
	if !a.gso.Load() || !b.gro {
		t.Skip("no UDP segmentation offload on this kernel")
	}
	fn := openReceive(t, a, b)
	var pkts [][]byte
	for i := range 20 {
		pkts = append(pkts, wgSeq(uint32(i), 200))
	}
	if err := a.SendBatch(b.self, pkts); err != nil {
		t.Fatal(err)
	}
	rb := newRecvBatch(8)
	n, err := fn(rb.bufs, rb.sizes, rb.eps)
	if err != nil {
		t.Fatal(err)
	}
	if n != 8 {
		t.Fatalf("got %d packets, want the batch full (8)", n)
	}
	for i := range n {
		if !bytes.Equal(rb.bufs[i][:rb.sizes[i]], pkts[i]) {
			t.Fatalf("packet %d differs", i)
		}
	}
	if d := b.Stats().DropsBatchFull; d != 12 {
		t.Fatalf("DropsBatchFull = %d, want 12", d)
	}
}

// TestIdleReaderSplitsCoalesced: with no Bind open, the idle reader hands
// every datagram of a coalesced run to Deliver.
func TestIdleReaderSplitsCoalesced(t *testing.T) {
	a, b, delivered := pairStatic(t)
	var pkts [][]byte
	for i := range 12 {
		pkts = append(pkts, wgSeq(uint32(i), 200))
	}
	if err := a.SendBatch(b.self, pkts); err != nil {
		t.Fatal(err)
	}
	for i := range pkts {
		r := expect(t, delivered, "delivered packet")
		if r.from != a.self || !bytes.Equal(r.pkt, pkts[i]) {
			t.Fatalf("delivery %d: %d bytes from %s, want datagram %d", i, len(r.pkt), r.from.ShortString(), i)
		}
	}
}

// TestGSOBrokenKernels: the kernels with the UDP GSO bug (7.0 to 7.1.4,
// release candidates of 7.1 included) send without segmentation; older
// and fixed ones keep it, and so does a release that cannot be read.
func TestGSOBrokenKernels(t *testing.T) {
	tests := []struct {
		release string
		want    [3]int
		ok      bool
		broken  bool
	}{
		{"6.8.0-45-generic", [3]int{6, 8, 0}, true, false},
		{"6.18.44-fc-v669", [3]int{6, 18, 44}, true, false},
		{"6.19.9", [3]int{6, 19, 9}, true, false},
		{"7.0-rc1", [3]int{7, 0, 0}, true, true},
		{"7.0.0", [3]int{7, 0, 0}, true, true},
		{"7.0.2-6-pve", [3]int{7, 0, 2}, true, true},
		{"7.0.14-pve", [3]int{7, 0, 14}, true, true},
		{"7.1-rc5", [3]int{7, 1, 0}, true, true},
		{"7.1.0", [3]int{7, 1, 0}, true, true},
		{"7.1.4-arch1-1", [3]int{7, 1, 4}, true, true},
		{"7.1.5", [3]int{7, 1, 5}, true, false},
		{"7.1.10", [3]int{7, 1, 10}, true, false},
		{"7.2.0", [3]int{7, 2, 0}, true, false},
		{"8.0", [3]int{8, 0, 0}, true, false},
		{"7", [3]int{7, 0, 0}, false, false},
		{"", [3]int{}, false, false},
		{"linux", [3]int{}, false, false},
		{"99999999.1", [3]int{999999, 0, 0}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.release, func(t *testing.T) {
			v, ok := parseKernelRelease(tt.release)
			if ok != tt.ok || (ok && v != tt.want) {
				t.Fatalf("parseKernelRelease(%q) = %v, %v; want %v, %v", tt.release, v, ok, tt.want, tt.ok)
			}
			if got := gsoBroken(v, ok); got != tt.broken {
				t.Errorf("gsoBroken(%q) = %v, want %v", tt.release, got, tt.broken)
			}
		})
	}
}
