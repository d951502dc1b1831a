package direct

import (
	"errors"
	"net"
	"net/netip"

	"golang.org/x/time/rate"

	"github.com/plures/plurenet/transports"
)

// The Mainline DHT on the socket. A DHT node (discovery/dht) runs on the
// transport's one socket, so the address the DHT learns for this node (and
// announces with implied_port) is the NAT mapping WireGuard's packets use.
// Anyone can send KRPC to the socket, so what reaches the DHT node is
// bounded in size (transports.KRPCMaxLen), queue and rate before the node
// parses it, and what the node sends is bounded in rate and must be KRPC.
const (
	// dhtQueue bounds KRPC datagrams read and not yet taken by the DHT
	// node: a lookup has at most a few dozen queries in flight, and the
	// node answers others' queries at the pace of dhtInRate.
	dhtQueue = 256

	// dhtInRate and dhtInBurst bound the KRPC datagrams passed to the DHT
	// node per second. A member's own lookups bring tens of replies per
	// second; a node of the public DHT receives a few queries per second.
	// A flood beyond this costs a token check per datagram, no parsing.
	dhtInRate  = 200
	dhtInBurst = 100

	// dhtOutRate and dhtOutBurst bound what the DHT node sends: a lookup
	// is a burst of queries, then quiet; the library's own limiter (set
	// below this by discovery/dht) paces it further.
	dhtOutRate  = 100
	dhtOutBurst = 100
)

// errDHTTwice is DHTConn called a second time.
var errDHTTwice = errors.New("direct: the DHT conn is already taken (one DHT node per socket)")

// DHTConn returns the socket as a net.PacketConn for one Mainline DHT node:
// its reads are the KRPC datagrams (transports.PayloadDHT) the socket
// receives, its writes go out of the socket. Until it is called, KRPC
// datagrams are dropped and counted. The caller closes it (after the DHT
// node, which takes a read error before its own Close for a crash); the
// Transport's Close does not.
func (t *Transport) DHTConn() (net.PacketConn, error) {
	c := newDivertConn(t.udp, transports.PayloadDHT, dhtQueue, transports.KRPCMaxLen,
		rate.NewLimiter(dhtInRate, dhtInBurst), rate.NewLimiter(dhtOutRate, dhtOutBurst))
	if !t.dht.CompareAndSwap(nil, c) {
		return nil, errDHTTwice
	}
	return c, nil
}

// deliverDHT copies a KRPC datagram for the DHT node; it never blocks.
func (t *Transport) deliverDHT(b []byte, from netip.AddrPort) {
	c := t.dht.Load()
	if c == nil {
		t.stats.dropOther.Add(1)
		return
	}
	t.stats.dhtIn.Add(1)
	c.deliver(b, from)
}
