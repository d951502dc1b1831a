//go:build darwin || windows

package kernel

import (
	"fmt"
	"log/slog"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
)

// handle is what the macOS and Windows devices share: wireguard-go's TUN,
// the interface's name and the filter of packets from the mesh. Closing
// the TUN removes the interface with its addresses and routes on both.
type handle struct {
	tun    tun.Device
	name   string
	log    *slog.Logger
	filter *destFilter

	closeOnce sync.Once
	closeErr  error
}

// TUN is the device for wireguard-go's device.NewDevice.
func (d *handle) TUN() tun.Device { return d.tun }

// Name is the interface's name (utunN on macOS, the adapter's on Windows).
func (d *handle) Name() string { return d.name }

// Dropped is the number of packets from the mesh the device refused
// because they were not addressed to its own addresses.
func (d *handle) Dropped() uint64 { return d.filter.dropped.Load() }

// Close closes the TUN; the system removes the interface, its addresses
// and its routes with it. It is idempotent.
func (d *handle) Close() error {
	d.closeOnce.Do(func() {
		if err := d.tun.Close(); err != nil {
			d.closeErr = fmt.Errorf("closing TUN device %s: %w", d.name, err)
		}
		d.log.Info("kernel TUN device closed", "iface", d.name)
	})
	return d.closeErr
}
