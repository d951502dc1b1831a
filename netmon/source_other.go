//go:build !linux

package netmon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// source lists interfaces with package net; there are no notifications
// here, so the Monitor polls, and no default routes: addresses alone show
// a move.
type source struct{}

func newSource() (*source, error) { return &source{}, nil }

func (*source) subscribe(context.Context, func()) bool { return false }

func (*source) close() {}

func (*source) take(exclude []netip.Prefix) (Snapshot, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return Snapshot{}, fmt.Errorf("netmon: listing interfaces: %w", err)
	}
	var addrs []netip.Addr
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		as, err := ifc.Addrs()
		if err != nil {
			continue // the interface went away meanwhile
		}
		for _, a := range as {
			if pfx, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(pfx.IP); ok {
					addrs = append(addrs, ip)
				}
			}
		}
	}
	return newSnapshot(addrs, nil, exclude), nil
}
