// Package transports is plurenet's pluggable transport layer: the conn.Bind
// that the WireGuard device sends and receives through, the Transport
// interface each path to a peer implements (transports/relay for each
// relay, transports/direct for direct UDP), and Classify, the one rule that
// tells WireGuard, STUN and sealed mesh messages apart on every path.
//
// Packets flow down and up without passing through the node: a transport
// hands what it receives to the Bind itself, either through Bind.Deliver
// from its own reader goroutine (the relay) or by filling the device's
// buffers in the device's own receive call (BatchReceiver, the direct
// socket).
//
// WireGuard endpoints here are peer keys, not ip:port pairs. The Bind picks,
// packet by packet, the first transport in preference order that can reach
// the peer now, so a path change never touches the WireGuard session and TCP
// connections on the overlay survive it.
package transports
