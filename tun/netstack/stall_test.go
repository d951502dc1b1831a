package netstack

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// lossyConnect joins two stacks like cable.Connect, but passes every packet
// through drop first (aToB tells the direction); a packet drop approves is
// lost, as at a full queue on the way.
func lossyConnect(tb testing.TB, a, b *Stack, drop func(aToB bool, pkt []byte) bool) {
	var wg sync.WaitGroup
	pump := func(src, dst *Stack, aToB bool) {
		defer wg.Done()
		bufs := make([][]byte, maxBatch)
		sizes := make([]int, maxBatch)
		for i := range bufs {
			bufs[i] = make([]byte, 65535)
		}
		var out [][]byte
		for {
			n, err := src.Read(bufs, sizes, 0)
			if err != nil {
				return
			}
			out = out[:0]
			for i := range n {
				if p := bufs[i][:sizes[i]]; !drop(aToB, p) {
					out = append(out, p)
				}
			}
			dst.Write(out, 0)
		}
	}
	wg.Add(2)
	go pump(a, b, true)
	go pump(b, a, false)
	tb.Cleanup(func() {
		a.Close()
		b.Close()
		wg.Wait()
	})
}

// tcpInfo returns a TCP packet's flags, payload length and window, or
// ok=false for anything else.
func tcpInfo(pkt []byte) (flags header.TCPFlags, payload int, window uint16, ok bool) {
	if len(pkt) < header.IPv4MinimumSize || pkt[0]>>4 != 4 {
		return 0, 0, 0, false
	}
	ip := header.IPv4(pkt)
	if ip.TransportProtocol() != header.TCPProtocolNumber || len(ip.Payload()) < header.TCPMinimumSize {
		return 0, 0, 0, false
	}
	tcp := header.TCP(ip.Payload())
	return tcp.Flags(), len(tcp) - int(tcp.DataOffset()), tcp.WindowSize(), true
}

// TestNoStallAfterLoss is the regression test of the stalled overlay
// transfer (docs/operations.md, "Known issues"). A sender streams to a
// receiver over a lossy link; the receiver stops reading now and then until
// its window closes, and starts again while its window updates are lost.
// After lossFor the link is clean, and the transfer must then complete.
//
// "window updates lost" needs the sender's zero-window probes to find the
// reopened window. "loss and pauses" reproduced the stall: with gVisor
// before its RFC 9438 fix, CUBIC could lower the congestion window to zero
// on ACKs after a loss at a window of one or two packets (an RTO, then a
// fast retransmit); with nothing in flight no timer is armed, so the
// sender waited for good with its window open, its Write blocked, both
// stacks idle.
func TestNoStallAfterLoss(t *testing.T) {
	for _, tc := range []struct {
		name     string
		lossRate float64 // of every TCP packet but SYNs, both directions
		lossFor  time.Duration
		pauses   int
		blackout time.Duration // how long window updates are lost after a pause
	}{
		{"window updates lost", 0, 0, 1, 1500 * time.Millisecond},
		{"loss and pauses", 0.03, 5 * time.Second, 3, 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const size = 8 << 20
			var dropUpdates atomic.Bool
			var lastPacket atomic.Int64 // unix nanos
			rng := rand.New(rand.NewPCG(1, 2))
			var rngMu sync.Mutex
			start := time.Now()
			a := newStack(t, addrA4)
			b := newStack(t, addrB4)
			lossyConnect(t, a, b, func(aToB bool, pkt []byte) bool {
				flags, payload, window, ok := tcpInfo(pkt)
				if !ok {
					return false
				}
				lastPacket.Store(time.Now().UnixNano())
				if !aToB && dropUpdates.Load() && payload == 0 && window > 0 && flags&header.TCPFlagAck != 0 {
					return true
				}
				if tc.lossRate > 0 && flags&header.TCPFlagSyn == 0 && time.Since(start) < tc.lossFor {
					rngMu.Lock()
					defer rngMu.Unlock()
					return rng.Float64() < tc.lossRate
				}
				return false
			})
			sendThrough(t, a, b, size, func(c net.Conn) int64 {
				var n int64
				buf := make([]byte, 64<<10)
				for range tc.pauses {
					// Read a little, then stop until the window is
					// closed; open it again while its updates are lost.
					k, err := io.ReadFull(c, buf)
					n += int64(k)
					if err != nil {
						return n
					}
					time.Sleep(time.Second)
					dropUpdates.Store(true)
					time.AfterFunc(tc.blackout, func() { dropUpdates.Store(false) })
				}
				return n + drain(c)
			}, func() string {
				return fmt.Sprintf("no TCP packet for the last %v", time.Since(time.Unix(0, lastPacket.Load())).Round(time.Millisecond))
			})
		})
	}
}

// sendThrough sends size bytes from a to port 5201 on b over one TCP
// connection, b reading with receive (which returns the bytes it read), and
// fails the test if the write does not finish within testTimeout (the flow
// stalled: stalled, when not nil, says more) or b did not get every byte.
func sendThrough(t *testing.T, a, b *Stack, size int, receive func(c net.Conn) int64, stalled func() string) {
	t.Helper()
	ln, err := b.Listen("tcp", ":5201")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		got <- receive(c)
	}()
	c, err := a.DialContext(testContext(t), "tcp", "100.64.0.2:5201")
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := c.Write(make([]byte, size)); err != nil {
		detail := ""
		if stalled != nil {
			detail = "; " + stalled()
		}
		t.Fatalf("write: %v: the flow stalled%s; sender's TCP: %s", err, detail, tcpState(a))
	}
	c.Close()
	if n := <-got; n != int64(size) {
		t.Fatalf("receiver got %d bytes, want %d", n, size)
	}
}

// drain reads c to its end and returns the bytes it read.
func drain(c net.Conn) int64 {
	n, _ := io.Copy(io.Discard, c)
	return n
}

// tcpState describes the TCP endpoints of s (state, RTT, RTO, congestion
// window and state): what a stalled flow's failure should show.
func tcpState(s *Stack) string {
	var b strings.Builder
	for _, ep := range s.stack.RegisteredEndpoints() {
		e, ok := ep.(tcpip.Endpoint)
		if !ok {
			continue
		}
		var info tcpip.TCPInfoOption
		if err := e.GetSockOpt(&info); err != nil {
			continue
		}
		fmt.Fprintf(&b, "[state %v rtt %v rttvar %v rto %v cc %v cwnd %d ssthresh %d reorder %v] ",
			info.State, info.RTT, info.RTTVar, info.RTO, info.CcState, info.SndCwnd, info.SndSsthresh, info.ReorderSeen)
	}
	return b.String()
}

// TestNoStallAfterShrunkWindow reproduces the stall the small-window guard
// (window.go) works around on purpose rather than by chance. The cable
// drops one data segment, shrinks the window of the receiver's next
// acknowledgment to one scale unit (a gVisor receiver, which rounds its
// window down, shrinks it by up to a unit; here by more, so the stall does
// not depend on the segment boundaries), and then loses every window update
// for a while, while the receiver reads. gVisor's sender, after its
// retransmission timeout, finds the unacknowledged segment too big for the
// window and arms no timer: without the guard it never sends again (the
// Write below hits its deadline). With it the sender sees a zero window,
// probes it, and the transfer completes.
func TestNoStallAfterShrunkWindow(t *testing.T) {
	const size = 4 << 20
	const blackout = 2 * time.Second
	var (
		mu     sync.Mutex
		acked  uint32 // the receiver's last acknowledgment
		sent   int    // data bytes the sender sent
		lost   uint32 // the dropped segment's sequence number, once dropped
		phase  int    // 0 hunting, 1 dropped, 2 window updates lost, 3 clean
		until  time.Time
		trap   = make(chan struct{})
		scaled uint8
	)
	a := newStack(t, addrA4)
	b := newStack(t, addrB4)
	lossyConnect(t, a, b, func(aToB bool, pkt []byte) bool {
		flags, payload, _, ok := tcpInfo(pkt)
		if !ok {
			return false
		}
		ip := header.IPv4(pkt)
		tcp := header.TCP(ip.Payload())
		mu.Lock()
		defer mu.Unlock()
		if flags&header.TCPFlagSyn != 0 {
			if !aToB {
				scaled, _ = windowScale(tcp)
			}
			return false
		}
		if aToB {
			sent += payload
			// Drop a full segment sent behind data not yet
			// acknowledged, once the flow is well under way.
			if phase == 0 && sent > 256<<10 && payload > 1<<scaled && int32(tcp.SequenceNumber()-acked) > 0 {
				lost, phase = tcp.SequenceNumber(), 1
				return true
			}
			return false
		}
		acked = tcp.AckNumber()
		switch phase {
		case 1:
			if acked != lost {
				return false
			}
			// The first acknowledgment that stops at the lost segment
			// advertises one scale unit, then window updates are lost.
			tcp.SetWindowSize(1)
			tcp.SetChecksum(0)
			xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp)))
			tcp.SetChecksum(^checksum.Checksum(tcp, xsum))
			phase, until = 2, time.Now().Add(blackout)
			close(trap)
		case 2:
			if time.Now().After(until) {
				phase = 3
				return false
			}
			return payload == 0 && flags&header.TCPFlagFin == 0
		}
		return false
	})
	sendThrough(t, a, b, size, func(c net.Conn) int64 {
		// Stop reading until the trap is set (so the window is small),
		// then read on while window updates are lost.
		buf := make([]byte, 64<<10)
		n, err := io.ReadFull(c, buf)
		if err != nil {
			return int64(n)
		}
		select {
		case <-trap:
			time.Sleep(blackout / 4)
		case <-time.After(testTimeout):
		}
		return int64(n) + drain(c)
	}, nil)
	mu.Lock()
	defer mu.Unlock()
	if phase < 2 {
		t.Fatalf("the cable never set its trap (phase %d): the test reproduced nothing", phase)
	}
}
