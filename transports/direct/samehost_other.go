//go:build !linux

package direct

import "github.com/plures/plurenet/internal/nodekey"

// hostMarker needs Linux's abstract Unix sockets (see samehost_linux.go).
// Elsewhere no peer is known to run on this host, so loopback and this
// host's own addresses are never used as a peer's candidates: two nodes on
// one machine meet through the relay.
type hostMarker struct{}

func newHostMarker(nodekey.Public) (*hostMarker, error) { return nil, nil }

func (*hostMarker) present(nodekey.Public) bool { return false }
func (*hostMarker) close()                      {}
