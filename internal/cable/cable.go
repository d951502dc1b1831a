// Package cable joins two TUN devices back to back for tests: what one
// device's Read returns is written to the other, as a WireGuard device would
// after encrypting and decrypting, so two userspace stacks can talk with no
// tunnel in between.
package cable

import (
	"sync"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
)

// maxPacket is the largest IP packet a device can hand over.
const maxPacket = 65535

// Connect runs one goroutine per direction copying every batch from one
// device into the other. They stop when the devices close; the test's
// cleanup closes both and waits.
func Connect(tb testing.TB, a, b tun.Device) {
	var wg sync.WaitGroup
	wg.Add(2)
	go pump(&wg, a, b)
	go pump(&wg, b, a)
	tb.Cleanup(func() {
		a.Close()
		b.Close()
		wg.Wait()
	})
}

func pump(wg *sync.WaitGroup, src, dst tun.Device) {
	defer wg.Done()
	bufs := make([][]byte, src.BatchSize())
	pkts := make([][]byte, src.BatchSize())
	sizes := make([]int, src.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, maxPacket)
	}
	for {
		n, err := src.Read(bufs, sizes, 0)
		if err != nil {
			return
		}
		for i := range n {
			pkts[i] = bufs[i][:sizes[i]]
		}
		// A write error means the far side closed: keep draining until
		// this side closes too.
		dst.Write(pkts[:n], 0)
	}
}
