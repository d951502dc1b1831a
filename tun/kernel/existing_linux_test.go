package kernel

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
)

func TestConflictingNetworks(t *testing.T) {
	tests := []struct {
		name     string
		setup    []string
		wantErr  bool
		mentions []string
	}{
		{
			name:     "route on another interface inside the mesh prefix",
			setup:    []string{"ip route add 100.64.5.0/24 dev dum0"},
			wantErr:  true,
			mentions: []string{`"dum0"`, "100.64.5.0/24", "100.64.0.0/10"},
		},
		{
			name:     "address on another interface",
			setup:    []string{"ip addr add 100.100.0.1/16 dev dum0"},
			wantErr:  true,
			mentions: []string{`"dum0"`, "100.100.0.1/16", "address"},
		},
		{
			name:     "covering route",
			setup:    []string{"ip route add 100.0.0.0/8 dev dum0"},
			wantErr:  true,
			mentions: []string{`"dum0"`, "100.0.0.0/8"},
		},
		{
			name:     "IPv6 route",
			setup:    []string{"ip -6 route add fd7a:115c:a1e0:5::/64 dev dum0"},
			wantErr:  true,
			mentions: []string{`"dum0"`, "fd7a:115c:a1e0:5::/64", "fd7a:115c:a1e0::/48"},
		},
		{
			name:     "blackhole route in another table",
			setup:    []string{"ip route add blackhole 100.64.7.0/24 table 100"},
			wantErr:  true,
			mentions: []string{"blackhole", "100.64.7.0/24"},
		},
		{
			name:    "unrelated LAN and a default route",
			setup:   []string{"ip addr add 10.0.0.1/8 dev dum0", "ip route add default dev dum0"},
			wantErr: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := testNS(t)
			// A veth pair stands in for another VPN's or LAN's
			// interface (this kernel may lack the dummy driver).
			sh(t, h, "ip link add dum0 type veth peer name dum0p")
			sh(t, h, "ip link set dum0p up")
			sh(t, h, "ip link set dum0 up")
			for _, cmd := range tt.setup {
				sh(t, h, cmd)
			}
			d, err := create(h, Config{Addrs: []netip.Prefix{nodeV4, nodeV6}})
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Create: %v", err)
				}
				drainAndClose(t, d)
				return
			}
			if err == nil {
				drainAndClose(t, d)
				t.Fatalf("Create succeeded despite the conflict")
			}
			var ce *ConflictError
			if !errors.As(err, &ce) {
				t.Errorf("error %v is not a *ConflictError", err)
			}
			for _, m := range tt.mentions {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %s", err, m)
				}
			}
			if _, lerr := nlHandle(t, h).LinkByName(DefaultName); lerr == nil {
				t.Errorf("a refused Create left interface %s behind", DefaultName)
			}
		})
	}
}

// drainAndClose closes a device created outside mustCreate.
func drainAndClose(t *testing.T, d *Device) {
	t.Helper()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range d.TUN().Events() {
		}
	}()
	if err := d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	<-drained
}

func TestExistingInterface(t *testing.T) {
	tests := []struct {
		name    string
		setup   []string
		wantErr string // "" = Create succeeds
		wantLog string
	}{
		{
			name:    "stale TUN from a crashed run is replaced",
			setup:   []string{"ip tuntap add mode tun name plurenet0", "ip addr add 100.64.1.2/10 dev plurenet0", "ip link set plurenet0 up"},
			wantLog: "removing stale TUN interface",
		},
		{
			name:    "stale TUN that is down",
			setup:   []string{"ip tuntap add mode tun name plurenet0"},
			wantLog: "removing stale TUN interface",
		},
		{
			name:    "not a TUN",
			setup:   []string{"ip link add plurenet0 type veth peer name pnpeer"},
			wantErr: "not a TUN device (type veth)",
		},
		{
			name:    "a TAP",
			setup:   []string{"ip tuntap add mode tap name plurenet0"},
			wantErr: "TAP device",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := testNS(t)
			for _, cmd := range tt.setup {
				sh(t, h, cmd)
			}
			nl := nlHandle(t, h)
			before, err := nl.LinkByName(DefaultName)
			if err != nil {
				t.Fatal(err)
			}
			var logs logBuffer
			d, err := create(h, Config{Addrs: []netip.Prefix{nodeV4}, Logger: logs.logger()})
			if tt.wantErr != "" {
				if err == nil {
					drainAndClose(t, d)
					t.Fatalf("Create succeeded, want an error containing %q", tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q, want it to contain %q", err, tt.wantErr)
				}
				if after, err := nl.LinkByName(DefaultName); err != nil || after.Attrs().Index != before.Attrs().Index {
					t.Errorf("the existing interface was touched: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			defer drainAndClose(t, d)
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log %q lacks %q", logs.String(), tt.wantLog)
			}
			after, err := nl.LinkByName(DefaultName)
			if err != nil {
				t.Fatal(err)
			}
			if after.Attrs().Index == before.Attrs().Index {
				t.Errorf("the stale interface (index %d) was reused, not replaced", before.Attrs().Index)
			}
		})
	}
}

func TestInUseByAnotherDevice(t *testing.T) {
	tests := []struct {
		name string
		down bool // the running owner's link is administratively down: no carrier to go by
	}{
		{"up", false},
		{"down", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := testNS(t)
			first := mustCreate(t, h, Config{Addrs: []netip.Prefix{nodeV4}})
			if tt.down {
				sh(t, h, "ip link set "+first.Name()+" down")
			}
			d, err := create(h, Config{Addrs: []netip.Prefix{nodeV4}})
			if err == nil {
				drainAndClose(t, d)
				t.Fatalf("a second Create took over a TUN in use")
			}
			if !errors.Is(err, ErrInUse) {
				t.Errorf("error %v, want ErrInUse", err)
			}
			if _, err := nlHandle(t, h).LinkByName(first.Name()); err != nil {
				t.Errorf("the first device's interface is gone: %v", err)
			}
		})
	}
}

// TestPersistentTUNHeldElsewhere: a persistent TUN (as `ip tuntap add`
// makes) that some other process holds while it is down shows no sign of
// use in its flags; Create must still leave it alone.
func TestPersistentTUNHeldElsewhere(t *testing.T) {
	h := testNS(t)
	sh(t, h, "ip tuntap add mode tun name "+DefaultName)
	var held tun.Device
	if err := h.Do(func() error {
		var err error
		held, err = tun.CreateTUN(DefaultName, DefaultMTU)
		return err
	}); err != nil {
		t.Fatalf("attaching to the persistent TUN: %v", err)
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range held.Events() {
		}
	}()
	t.Cleanup(func() {
		held.Close()
		<-drained
	})
	sh(t, h, "ip link set "+DefaultName+" down")

	d, err := create(h, Config{Addrs: []netip.Prefix{nodeV4}})
	if err == nil {
		drainAndClose(t, d)
		t.Fatalf("Create took over a TUN another process holds")
	}
	if !errors.Is(err, ErrInUse) {
		t.Errorf("error %v, want ErrInUse", err)
	}
}
