package kernel

import (
	"crypto/sha256"
	"fmt"
	"strings"
)

// wintunArch names the folder of the Wintun release that holds the
// wintun.dll for a Go architecture.
func wintunArch(goarch string) string {
	if goarch == "386" {
		return "x86"
	}
	return goarch // amd64, arm64, arm: the release's names too
}

// wintunMissingError is Create's error on Windows when wintun.dll cannot be
// loaded (missing, or built for another architecture): the one file the
// user must add, which one, and where. exe is the running program's path
// ("" when unknown).
func wintunMissingError(name, goarch, exe string, err error) error {
	where := "next to plurenet.exe"
	// Split by hand: a Windows path, whatever OS runs the tests.
	if i := strings.LastIndexAny(exe, `\/`); i > 0 && i < len(exe)-1 {
		where = fmt.Sprintf("next to %s (in %s)", exe[i+1:], exe[:i])
	}
	return fmt.Errorf("creating TUN device %s: wintun.dll could not be loaded (%w): --tun on Windows needs wintun.dll from the Wintun release matching your architecture (the %s folder), placed %s; or drop --tun to use the userspace adapter",
		name, err, wintunArch(goarch), where)
}

// adapterGUID is the GUID a Wintun adapter of this name is created with:
// derived from the name, so that the adapter comes back as the same
// network after a restart and Windows keeps what the user chose for it
// (its firewall profile, Private or Public) instead of meeting "Network 2",
// "Network 3"... (WireGuard for Windows does the same for its tunnels).
// An RFC 9562 version 8 (custom) UUID from SHA-256 of a fixed label and
// the name, as the bytes of its text form.
func adapterGUID(name string) [16]byte {
	h := sha256.Sum256([]byte("plurenet wintun adapter\x00" + name))
	var g [16]byte
	copy(g[:], h[:16])
	g[6] = g[6]&0x0f | 0x80 // version 8
	g[8] = g[8]&0x3f | 0x80 // variant 10
	return g
}
