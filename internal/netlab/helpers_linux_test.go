package netlab

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Deadlines of the lab tests. They only bound how long a test waits; no test
// asserts that anything is fast.
const (
	// blockedWait is how long a probe waits before concluding that a
	// firewall dropped it. Dropped packets produce no error, so a probe
	// can only give up; a generous value would only slow the suite down,
	// and every negative probe follows a positive control on the same path.
	blockedWait = 1500 * time.Millisecond
	// openWait bounds probes that are expected to succeed.
	openWait = 10 * time.Second
)

// tcpServer accepts connections inside a host and records each peer's
// address; it echoes one line back so the client can tell it got through.
type tcpServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	peers []netip.AddrPort
}

func listenTCP(t *testing.T, h *Host, port uint16) *tcpServer {
	t.Helper()
	s := &tcpServer{}
	if err := h.Do(func() error {
		var err error
		s.ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatalf("listen tcp %d in %s: %v", port, h.Name(), err)
	}
	s.wg.Go(func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.peers = append(s.peers, c.RemoteAddr().(*net.TCPAddr).AddrPort())
			s.mu.Unlock()
			s.wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(openWait))
				buf := make([]byte, 64)
				n, _ := c.Read(buf)
				_, _ = c.Write(buf[:n])
			})
		}
	})
	t.Cleanup(func() {
		s.ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *tcpServer) lastPeer() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.peers) == 0 {
		return netip.AddrPort{}
	}
	return s.peers[len(s.peers)-1]
}

// dialTCP connects from inside h to dst, exchanges a line, and returns the
// local address of the connection.
func dialTCP(h *Host, dst netip.AddrPort, timeout time.Duration) (netip.AddrPort, error) {
	var c net.Conn
	if err := h.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp4", dst.String(), timeout)
		return err
	}); err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(openWait))
	msg := []byte("hello\n")
	if _, err := c.Write(msg); err != nil {
		return netip.AddrPort{}, err
	}
	got := make([]byte, len(msg))
	if _, err := c.Read(got); err != nil {
		return netip.AddrPort{}, fmt.Errorf("reading echo: %w", err)
	}
	return c.LocalAddr().(*net.TCPAddr).AddrPort(), nil
}

// udpEcho answers every datagram it gets inside a host, over either
// family.
func udpEcho(t *testing.T, h *Host, port uint16) {
	t.Helper()
	var pc net.PacketConn
	if err := h.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatalf("listen udp %d in %s: %v", port, h.Name(), err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	})
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
}

// errNoReply is what probeUDP returns when nothing came back in time.
var errNoReply = errors.New("no UDP reply")

// probeUDP sends datagrams from inside h to dst until one is echoed or wait
// passes.
func probeUDP(h *Host, dst netip.AddrPort, wait time.Duration) error {
	var pc net.PacketConn
	if err := h.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp", ":0")
		return err
	}); err != nil {
		return err
	}
	defer pc.Close()
	msg := []byte("ping")
	buf := make([]byte, 64)
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if _, err := pc.WriteTo(msg, net.UDPAddrFromAddrPort(dst)); err != nil {
			return err
		}
		_ = pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _, err := pc.ReadFrom(buf)
		if err == nil && bytes.Equal(buf[:n], msg) {
			return nil
		}
	}
	return errNoReply
}
