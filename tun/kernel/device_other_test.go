//go:build !linux

package kernel

import (
	"strings"
	"testing"
)

// Off Linux, asking for a kernel TUN device fails with an error that names
// the flag to drop, rather than a node that comes up without its device.
func TestCreateUnsupported(t *testing.T) {
	d, err := Create(Config{Name: "plurenet0"})
	if err == nil || d != nil {
		t.Fatalf("Create = %v, %v; want an error", d, err)
	}
	if !strings.Contains(err.Error(), "--tun") || !strings.Contains(err.Error(), "only implemented on Linux") {
		t.Fatalf("error %q does not say that --tun is Linux only", err)
	}
}
