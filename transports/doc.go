// Package transports is plurenet's pluggable transport layer: the conn.Bind
// that the WireGuard device sends and receives through, and the Transport
// interface each path to a peer implements (relay, fallback relay, and later
// direct UDP).
//
// WireGuard endpoints here are peer keys, not ip:port pairs. The Bind picks,
// packet by packet, the first transport in preference order that can reach
// the peer now, so a path change never touches the WireGuard session and TCP
// connections on the overlay survive it.
package transports
