//go:build !linux && !darwin && !windows

package kernel

import (
	"strings"
	"testing"
)

// Where there is no kernel adapter (FreeBSD...), asking for a kernel TUN
// device fails with an error that names the flag to drop, rather than a
// node that comes up without its device.
func TestCreateUnsupported(t *testing.T) {
	d, err := Create(Config{Name: "plurenet0"})
	if err == nil || d != nil {
		t.Fatalf("Create = %v, %v; want an error", d, err)
	}
	if !strings.Contains(err.Error(), "--tun") || !strings.Contains(err.Error(), "only implemented on Linux, macOS and Windows") {
		t.Fatalf("error %q does not say where --tun works", err)
	}
}
