// Package overlay gives the plurenet node: it joins a mesh named by a topic
// and a secret, gives the node stable virtual IPs, finds the other members
// through sealed announcements on the relays, and carries their traffic in a
// WireGuard device over the transports layer.
//
// A Node is also the Go API for programs that embed a member (like tsnet):
// Dial and Listen reach other members over the userspace adapter with no
// root and no TUN device.
package overlay
