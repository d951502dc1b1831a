package overlay

import (
	"fmt"
	"os"
)

// splitDNSApplies reports whether systemd-resolved can route names to this
// node's TUN interface: only when the node runs in the network namespace of
// PID 1, where resolved runs. resolved names links by interface index, and
// an index in another namespace (a container, a test lab) may be a
// different interface of the host's, whose DNS settings a registration and
// its revert would overwrite. When PID 1's namespace cannot be read (a node
// that is not root, a container without that right) the node cannot tell,
// and does not register: a node without root would mostly be refused by
// resolved's polkit rules anyway.
func splitDNSApplies() (bool, string) {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return false, fmt.Sprintf("cannot tell which network namespace this node runs in: %v", err)
	}
	init, err := os.Readlink("/proc/1/ns/net")
	if err != nil {
		return false, fmt.Sprintf("cannot tell whether this node shares systemd-resolved's network namespace: %v", err)
	}
	if self != init {
		return false, "this node runs in a network namespace of its own, systemd-resolved in the host's"
	}
	return true, ""
}
