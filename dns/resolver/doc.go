// Package resolver is the mesh's name server: a DNS server (on
// github.com/miekg/dns) that answers A and AAAA for the members' names
// under the mesh suffix, and PTR for their overlay addresses, from a
// names.Table that its owner replaces whenever the membership changes
// (Update). It is not a recursive resolver and not an open one:
//
//   - Names outside the suffix and the overlay's reverse zones get REFUSED;
//     nothing is ever forwarded.
//   - Only sources inside Config.Allow (the node passes its overlay
//     prefixes and loopback) get an answer; others are dropped without one,
//     before their bytes are parsed.
//   - Every source has its own token bucket (a bounded map); over its rate
//     a query is dropped.
//   - Queries and answers are bounded: a UDP query is read into a
//     maxUDPQuery buffer, an answer never exceeds what the client said it
//     can take (512 bytes without EDNS0), TCP connections are capped and
//     time out.
//
// It serves on whatever sockets its owner hands it (ServePacketConn,
// ServeListener): a netstack UDP socket on the overlay address in the
// userspace adapter, a kernel socket on the TUN address, 127.0.0.1:PORT.
// docs/architecture.md ("Names (DNS)") and docs/security.md ("DNS
// resolver") say why each choice was made.
package resolver
