// Package netlab builds small throw-away networks for tests: network
// namespaces joined by veth pairs and Linux bridges, an "internet" segment,
// NAT routers that behave like home routers, and firewall profiles — so a
// test can run real programs and real sockets across NATs and firewalls on
// one machine.
//
// A test calls New, builds a topology, and everything the lab created is torn
// down in t.Cleanup, also when the test fails:
//
//	lab := netlab.New(t) // skips the test when not root or tools are missing
//	r := lab.NATRouter("r1", netlab.RouterConfig{})
//	a := lab.Host("a", r)                // 10.1.0.2 behind r1
//	relay := lab.Host("relay", lab.Internet()) // 198.18.0.x, "public"
//	a.Firewall(netlab.Corporate)
//	err := a.Do(func() error { c, err := net.Dial("tcp", ...); ... })
//
// Addressing: the internet is 198.18.0.0/15 (RFC 2544 benchmarking range, so
// it can never be a real destination); LANs behind routers are 10.k.0.0/24.
// Both exist only inside the lab's namespaces.
//
// Naming: every namespace is called "pln-<pid>-<lab>-<node>". The PID makes
// concurrent runs (several `go test` processes, several labs per process)
// distinct, and lets New sweep namespaces left by a crashed run whose PID no
// longer exists. Veth pairs are created directly inside the lab's namespaces
// (never in the root namespace), so their short names ("eth0", "wan",
// "p3-a") cannot collide with anything outside the lab, and deleting the
// namespaces deletes them.
//
// The lab needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and the `ip` and
// `iptables` commands (Debian: iproute2, iptables); without them the calling
// test is skipped with a message saying why.
package netlab
