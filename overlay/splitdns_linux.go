package overlay

import "os"

// splitDNSApplies reports whether systemd-resolved can route names to this
// node's TUN interface: only when the node runs in the network namespace of
// PID 1, where resolved runs. resolved names links by interface index, and
// an index in another namespace (a container, a test lab) may be a
// different interface of the host's, whose DNS settings a registration and
// its revert would overwrite. When PID 1's namespace cannot be read (not
// root), the node is taken to be in it, as it almost always is.
func splitDNSApplies() (bool, string) {
	self, err1 := os.Readlink("/proc/self/ns/net")
	init, err2 := os.Readlink("/proc/1/ns/net")
	if err1 == nil && err2 == nil && self != init {
		return false, "this node runs in a network namespace of its own, systemd-resolved in the host's"
	}
	return true, ""
}
