package kernel

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestWaitUsable(t *testing.T) {
	if err := waitUsable([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}, time.Second); err != nil {
		t.Fatalf("loopback: %v", err)
	}
	// 192.0.2.1 (TEST-NET-1, RFC 5737) is on no interface: never usable.
	err := waitUsable([]netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")}, 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "192.0.2.1") {
		t.Fatalf("an address on no interface: %v, want an error naming it", err)
	}
}
