// Package discovery is how the members of a swarm-mode mesh (no relay)
// find each other: each source (discovery/lan, multicast on the local
// network; discovery/static, configured addresses; the Mainline DHT next)
// reports the peers it finds and hands over the sealed mesh messages it
// receives, and carries the node's own sealed announcements where it
// reaches.
//
// A source knows nothing of the mesh secret. What it finds is a hint: an
// address becomes a member's path only once the member, authenticated by
// its sealed and signed messages, answers a path check from it
// (transports/direct/pathcheck.go). A sealed message is opaque bytes to the
// source, bounded in size and rate per source before it is handed on,
// because anyone who can reach the source can send to it. The node opens
// it, authenticates the sender by the seal and signature and applies it,
// whatever carried it.
//
// The node holds the interface its sources satisfy (overlay/swarm.go); this
// package holds what both sides speak: Peer, Sink and the candidate form in
// which a member announces its direct socket.
package discovery

import (
	"errors"
	"net/netip"

	"github.com/plures/plurenet/internal/nodekey"
)

// Peer is a member's direct socket as a source found it.
type Peer struct {
	// Label names the finding within its source, e.g. the configured
	// "nas.local:51898": a later Peer with the same Label replaces it
	// (the name resolved to another address).
	Label string
	// Key is the member's key when the source knows it (a static peer
	// configured as KEY@HOST:PORT); zero otherwise, and then the key is
	// learned from the member's first sealed announcement.
	Key nodekey.Public
	// Addr is the member's direct socket: IPv4 unicast with a port.
	Addr netip.AddrPort
}

// Sink is where a source reports. Both functions may be called from the
// source's goroutines and must return quickly.
type Sink struct {
	// Found reports a peer address to announce to (and, with a key, a
	// path to the member before it has said anything).
	Found func(Peer)
	// Sealed hands over a sealed mesh message as received, with the
	// datagram's source address; the callee owns msg.
	Sealed func(from netip.AddrPort, msg []byte)
}

// BeginStart is the start of every source's Start: sink must have a Found
// func, and a source starts once (*started records it). source names the
// source in the error.
func BeginStart(sink Sink, started *bool, source string) error {
	if sink.Found == nil {
		return errors.New(source + ": no Found func in the sink")
	}
	if *started {
		return errors.New(source + ": started twice")
	}
	*started = true
	return nil
}
