// Package dhttest starts private Mainline DHTs on loopback for tests.
package dhttest

import (
	"log/slog"
	"net"
	"testing"

	"github.com/plures/plurenet/discovery/dht"
)

// Private starts n plain DHT nodes (dht.NewServer) on 127.0.0.1, each
// joining through the first, closed when t ends, and returns their
// addresses as HOST:PORT for ServerConfig.Bootstrap.
func Private(t testing.TB, n int) []string {
	t.Helper()
	var addrs []string
	for i := range n {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		boot := []string{} // the first knows nobody
		if i > 0 {
			boot = addrs[:1]
		}
		// Loopback tests run lookups back to back: no send rate to speak of.
		srv, _, err := dht.NewServer(c, dht.ServerConfig{Bootstrap: boot, SendRate: 1000, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Close)
		if i > 0 {
			if _, err := srv.Bootstrap(); err != nil {
				t.Logf("bootstrap of DHT node %d: %v", i, err)
			}
		}
		addrs = append(addrs, c.LocalAddr().String())
	}
	return addrs
}
