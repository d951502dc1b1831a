package dht

import (
	"net"

	"golang.org/x/time/rate"

	"github.com/plures/plurenet/transports"
)

// limitConn bounds what a plain socket hands a DHT node (`plurenet
// dht-node`, which has no direct transport to demultiplex and bound for
// it): only KRPC-shaped datagrams (transports.IsKRPC, which bounds the
// size) within a rate; the rest are read and dropped before any parsing.
type limitConn struct {
	net.PacketConn
	in *rate.Limiter
}

// LimitConn wraps pc so that reads return only KRPC-shaped datagrams, at
// most perSecond per second (burst the same).
func LimitConn(pc net.PacketConn, perSecond int) net.PacketConn {
	return &limitConn{PacketConn: pc, in: rate.NewLimiter(rate.Limit(perSecond), perSecond)}
}

func (c *limitConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil {
			return n, addr, err
		}
		if transports.IsKRPC(p[:n]) && c.in.Allow() {
			return n, addr, nil
		}
	}
}
