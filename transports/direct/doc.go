// Package direct is plurenet's direct UDP path: ICE (pion/ice) punches a
// hole through NATs between two members, and WireGuard packets then travel
// peer to peer over one UDP socket per node.
//
// The socket carries both kinds of traffic. Each received datagram is
// classified by its first bytes: WireGuard messages go to the WireGuard
// device (through the conn.ReceiveFunc the Transport offers the
// transports.Bind, which reads batches straight into the device's buffers),
// STUN messages go to ICE, anything else is dropped and counted.
//
// On Linux the socket uses UDP segmentation offload both ways, as
// wireguard-go's own socket does (see offload_linux.go): a batch of
// same-size WireGuard packets leaves in one segmented message (UDP_SEGMENT,
// the packets gathered in place), and runs the kernel coalesced on receive
// (UDP_GRO) are split into the device's buffers before classification, so
// a STUN or mesh datagram inside a run is still diverted.
//
// ICE needs the two members to exchange credentials and candidates. The
// Transport encodes them as small versioned messages (see signal.go) and
// hands them to Config.Signal; the caller carries them (the overlay seals
// them as mesh.KindSignal and sends them over the relay) and feeds what
// arrives to HandleSignal. The member with the lower public key controls the
// ICE session, so both sides agree on roles without a round trip.
// A peer's candidates are requests to send STUN to an address, so those
// aimed at loopback, link-local or this host's own addresses are used only
// when the peer runs on this host, as the kernel attests (candidates.go,
// samehost_linux.go).
//
// Per peer the path moves connecting -> direct -> lost -> connecting...:
// Reachable is true only while the path is direct and a packet arrived from
// the peer within LossTimeout, so the Bind falls back to a relay within that
// time when the path dies, and comes back to it when ICE succeeds again. The
// WireGuard session is never touched. A path carrying traffic is judged
// sooner: probed when the peer falls silent, and cut while the probes go
// unanswered (probe.go). A freshly selected path is tentative, and the Bind
// doubles packets over the relay until the peer is seen using it
// (tentative.go).
//
// Without a relay (the overlay's swarm mode, Config.DisableICE) there is no
// ICE: each peer's path is a static address given with SetStatic (see
// static.go), and the socket also carries sealed mesh messages (first byte
// 0xF1), handed to Config.OnMesh through bounded queues, rate-limited per
// source with members' addresses favoured (mesh.go), and sent with
// SendMesh, so that members announce themselves to each other's direct
// sockets and learn each other's addresses from them. A static path moves
// to an address, and stays usable, only on authenticated traffic: the
// caller reports each authenticated message (Heard), and the transport
// checks a new address with a probe the member must answer from there
// (pathcheck.go); WireGuard and STUN datagrams confirm nothing.
package direct
