// Package filter gives the inbound access filter of an owned mesh: a
// tun.Device wrapper that sits between wireguard-go and the adapter (the
// userspace stack or the kernel TUN), so every packet a member sends this
// node passes it before it reaches a socket.
//
// Write (packets from the mesh to this node) admits a packet when it
// belongs to a flow this node opened, or when the Policy lets its sender
// open that flow; the rest are counted and dropped. Read (packets this node
// sends) records the flows this node opens in a bounded table, so that
// their replies pass whatever the policy says about the other direction.
//
// Invariants:
//   - A Device without a Policy (SetPolicy(nil)) passes everything: a mesh
//     without a policy allows everything.
//   - The sender of a packet is its source address. That is an
//     authentication only because wireguard-go admits from each peer only
//     its AllowedIPs (the member's overlay addresses): the filter must sit
//     on the WireGuard side of the adapter, never on a path that skips it.
//   - The hot path allocates nothing and takes one lock per batch; the flow
//     table has a fixed size (flows.go) and evicts per bucket.
package filter
