//go:build !linux && !darwin && !windows

package kernel

import (
	"errors"
	"net/netip"
	"runtime"

	"golang.zx2c4.com/wireguard/tun"
)

// errUnsupported explains why there is no kernel adapter here.
var errUnsupported = errors.New("the kernel TUN adapter is only implemented on Linux, macOS and Windows, not " + runtime.GOOS + ": drop --tun to use the userspace adapter")

// privilegeHint is never shown here (Create fails before asking for
// privileges); permissionError needs one on every OS.
const privilegeHint = "run as root, or drop --tun to use the userspace adapter"

// Device is a kernel TUN interface; it cannot be created on this platform.
type Device struct{}

// Create always fails on this platform.
func Create(cfg Config) (*Device, error) {
	if _, err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	return nil, errUnsupported
}

// TUN returns nil: no Device is ever created on this platform.
func (d *Device) TUN() tun.Device { return nil }

// Name returns "".
func (d *Device) Name() string { return "" }

// Close does nothing.
func (d *Device) Close() error { return nil }

// SetAddrs fails: no Device is ever created on this platform.
func (d *Device) SetAddrs([]netip.Prefix) error { return errUnsupported }

// Dropped returns 0: no Device is ever created on this platform.
func (d *Device) Dropped() uint64 { return 0 }
