//go:build !linux

package overlay

// splitDNSApplies: split DNS is registered with systemd-resolved, which
// only Linux has.
func splitDNSApplies() (bool, string) {
	return false, "split DNS is registered with systemd-resolved, which this system does not have"
}
