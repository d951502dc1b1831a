// Package portmap asks the local gateway (the default route's router) to
// forward a UDP port to this host, so that members behind a NAT that no
// hole punch gets through (a symmetric one) still offer peers an address
// they can reach: the gateway's external address and the mapped port.
//
// Three protocols do this, all spoken only to the default gateway:
//
//   - UPnP IGD (github.com/huin/goupnp for the device description and SOAP
//     actions): an SSDP search by multicast on the local link, then HTTP
//     to the gateway;
//   - NAT-PMP, RFC 6886 (github.com/jackpal/go-nat-pmp): UDP to the
//     gateway's port 5351;
//   - PCP, RFC 6887, the MAP opcode (pcp.go: no maintained Go library
//     exists): UDP to the gateway's port 5351.
//
// A Mapper probes the three at once, maps the port with the first that
// answers in that order of preference, renews the mapping at half its
// lifetime, and removes it on Close. Probe only asks which protocols
// answer, creating nothing, for "plurenet netcheck".
//
// The gateway is a device on our own link; we trust it no more than any
// host there. Answers are accepted only from the gateway's address (a
// connected socket for PCP, a source check for NAT-PMP and SSDP), HTTP goes
// only to the gateway's address with no redirects, and every answer is
// bounded in size and time, so a hostile host on the LAN can at worst make
// us offer a wrong candidate, which ICE then fails to use.
package portmap
