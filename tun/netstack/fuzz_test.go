package netstack

import (
	"testing"
)

// FuzzWrite injects arbitrary bytes as inbound packets, as a hostile peer's
// decrypted traffic would arrive, into a stack with TCP and UDP listeners.
// It checks that nothing panics and the stack keeps answering pings.
func FuzzWrite(f *testing.F) {
	s := newStack(f, addrA4, addrA6)
	ln, err := s.Listen("tcp", ":80")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ln.Close() })
	pc, err := s.ListenPacket("udp", ":53")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { pc.Close() })

	// Seeds: a TCP SYN and a UDP datagram to the listeners, and fragments.
	f.Add([]byte{0x45, 0, 0, 40, 0, 1, 0, 0, 64, 6, 0, 0, 100, 64, 0, 2, 100, 64, 0, 1,
		0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0})
	f.Add([]byte{0x45, 0, 0, 29, 0, 1, 0, 0, 64, 17, 0, 0, 100, 64, 0, 2, 100, 64, 0, 1,
		0x30, 0x39, 0, 53, 0, 9, 0, 0, 'x'})
	f.Add([]byte{0x45, 0, 0, 28, 0, 1, 0x20, 0, 64, 17, 0, 0, 100, 64, 0, 2, 100, 64, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0x60, 0, 0, 0, 0, 8, 17, 64,
		0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
		0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
		0x30, 0x39, 0, 53, 0, 8, 0, 0})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if _, err := s.Write([][]byte{pkt}, 0); err != nil {
			t.Fatal(err)
		}
		// Drop whatever the stack answered so the queue never fills.
		s.link.mu.Lock()
		s.link.dropQueued()
		s.link.mu.Unlock()
		if ping(t, s, addrB4, addrA4) == nil {
			t.Fatal("stack stopped answering")
		}
	})
}
