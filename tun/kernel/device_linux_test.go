package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

func TestCreateConfiguresInterface(t *testing.T) {
	tests := []struct {
		name     string
		cfg      Config
		wantName string
		wantMTU  int
	}{
		{"defaults, dual stack", Config{Addrs: []netip.Prefix{nodeV4, nodeV6}}, DefaultName, DefaultMTU},
		{"custom name and MTU, IPv4 only", Config{Name: "pn-test0", MTU: 1420, Addrs: []netip.Prefix{nodeV4}}, "pn-test0", 1420},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := testNS(t)
			d := mustCreate(t, h, tt.cfg)
			nl := nlHandle(t, h)

			if d.Name() != tt.wantName {
				t.Errorf("Name() = %q, want %q", d.Name(), tt.wantName)
			}
			link, err := nl.LinkByName(tt.wantName)
			if err != nil {
				t.Fatalf("interface %s in the namespace: %v", tt.wantName, err)
			}
			if _, ok := link.(*netlink.Tuntap); !ok {
				t.Errorf("interface type %s, want tuntap", link.Type())
			}
			if link.Attrs().MTU != tt.wantMTU {
				t.Errorf("MTU %d, want %d", link.Attrs().MTU, tt.wantMTU)
			}
			if mtu, err := d.TUN().MTU(); err != nil || mtu != tt.wantMTU {
				t.Errorf("TUN().MTU() = %d, %v; want %d", mtu, err, tt.wantMTU)
			}
			if link.Attrs().Flags&net.FlagUp == 0 {
				t.Errorf("interface is not up: %v", link.Attrs().Flags)
			}
			addrs, err := nl.AddrList(link, netlink.FAMILY_ALL)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range tt.cfg.Addrs {
				found := false
				for _, a := range addrs {
					if p, ok := toPrefix(a.IPNet); ok && p == want {
						found = true
					}
				}
				if !found {
					t.Errorf("address %s missing on %s (have %v)", want, tt.wantName, addrs)
				}
				// The mesh prefix routes to the device.
				route, err := nl.RouteGet(want.Masked().Addr().Next().AsSlice())
				if err != nil || len(route) == 0 || route[0].LinkIndex != link.Attrs().Index {
					t.Errorf("route to mesh prefix %s does not use %s: %v, %v", want.Masked(), tt.wantName, route, err)
				}
			}
		})
	}
}

func TestCloseRemovesInterface(t *testing.T) {
	tests := []struct {
		name     string
		closeTUN bool // wireguard-go's device.Close closes the TUN first
	}{
		{"Close", false},
		{"TUN closed first", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := testNS(t)
			d, err := create(h, Config{Addrs: []netip.Prefix{nodeV4, nodeV6}})
			if err != nil {
				t.Fatal(err)
			}
			drained := make(chan struct{})
			go func() {
				defer close(drained)
				for range d.TUN().Events() {
				}
			}()
			if tt.closeTUN {
				if err := d.TUN().Close(); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			<-drained
			if err := d.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			nl := nlHandle(t, h)
			if _, err := nl.LinkByName(d.Name()); err == nil {
				t.Errorf("interface %s still exists after Close", d.Name())
			}
		})
	}
}

func TestPermissionErrorMapping(t *testing.T) {
	const want = "creating TUN device pntest-perm: permission denied: run as root or with CAP_NET_ADMIN, or drop --tun to use the userspace adapter (no privileges needed)"
	tests := []struct {
		name    string
		err     error
		wantMsg string
		wantIs  error
	}{
		{"EPERM", unix.EPERM, want, os.ErrPermission},
		{"EACCES", unix.EACCES, want, os.ErrPermission},
		{"EBUSY", unix.EBUSY, "", ErrInUse},
		{"other", unix.ENOENT, "", unix.ENOENT},
	}
	orig := createTUN
	t.Cleanup(func() { createTUN = orig })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			createTUN = func(string, int) (tun.Device, error) { return nil, fmt.Errorf("ioctl TUNSETIFF: %w", tt.err) }
			// Runs in the test's own namespace: the fake never creates
			// anything, and TEST-NET-3 overlaps no real network.
			_, err := Create(Config{Name: "pntest-perm", Addrs: []netip.Prefix{netip.MustParsePrefix("203.0.113.7/24")}})
			if err == nil {
				t.Fatal("Create succeeded")
			}
			if tt.wantMsg != "" && err.Error() != tt.wantMsg {
				t.Errorf("error\n %q\nwant\n %q", err, tt.wantMsg)
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v does not match %v", err, tt.wantIs)
			}
		})
	}
}

// TestWithoutCapNetAdmin creates the device on a thread that has really
// dropped CAP_NET_ADMIN (capabilities are per thread on Linux).
func TestWithoutCapNetAdmin(t *testing.T) {
	h := testNS(t)
	errc := make(chan error, 1)
	go func() {
		// This goroutine never unlocks: its thread, stripped of a
		// capability and in the test namespace, dies with it.
		runtime.LockOSThread()
		if err := netns.Set(h.NetNS()); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("capget: %w", err)
			return
		}
		const capNetAdmin = 12
		data[0].Effective &^= 1 << capNetAdmin
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("capset: %w", err)
			return
		}
		d, err := Create(Config{Addrs: []netip.Prefix{nodeV4}})
		if err == nil {
			d.Close()
			errc <- errors.New("Create succeeded without CAP_NET_ADMIN")
			return
		}
		errc <- err
	}()
	err := <-errc
	const want = "creating TUN device plurenet0: permission denied: run as root or with CAP_NET_ADMIN, or drop --tun to use the userspace adapter (no privileges needed)"
	if err == nil || err.Error() != want {
		t.Fatalf("error\n %v\nwant\n %s", err, want)
	}
}
