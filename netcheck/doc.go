// Package netcheck tells what the network in front of this host allows,
// and what that means for direct paths between members: whether UDP gets
// out at all, how the NAT maps it (one public address and port for every
// destination, which hole punching needs, or a new one for each), whether
// the router maps ports on request (UPnP IGD, NAT-PMP, PCP), whether the
// host has IPv6, and how long each relay takes to answer. It is what
// "plurenet netcheck" prints.
//
// It sends STUN binding requests to the STUN servers it is given (the
// relays' own responders by default), asks the default gateway which
// port-mapping protocols it speaks without mapping anything (package
// portmap), and opens and closes a WebSocket to each relay; nothing else.
package netcheck
