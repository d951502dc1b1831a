package kernel

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// Tests of the OS-independent pieces that macOS and Windows configure
// their devices with. They run on every OS, here on Linux: the code that
// calls them on macOS and Windows is compiled and vetted only.

// nodeV4b is where nodeV4 moves.
var nodeV4b = netip.MustParsePrefix("100.64.7.9/10")

func TestCheckUtunName(t *testing.T) {
	for _, name := range []string{"utun", "utun0", "utun7", "utun42", "utun9999"} {
		if err := checkUtunName(name); err != nil {
			t.Errorf("checkUtunName(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{"", "plurenet0", "tun0", "utun-1", "utun+3", "utun07", "utun3a", "utun 3", "utun10000", "UTUN3", "utun99999999999999999999"} {
		err := checkUtunName(name)
		if err == nil {
			t.Errorf("checkUtunName(%q) = nil, want an error", name)
			continue
		}
		if !strings.Contains(err.Error(), "--tun utun") || !strings.Contains(err.Error(), "macOS") {
			t.Errorf("checkUtunName(%q) = %q: does not say what macOS accepts", name, err)
		}
	}
}

func argvs(cmds []command) []string {
	out := make([]string, len(cmds))
	for i, c := range cmds {
		out[i] = strings.Join(c.argv, " ")
		if c.existsOK {
			out[i] += " [exists ok]"
		}
	}
	return out
}

func TestUtunAddCommands(t *testing.T) {
	tests := []struct {
		name  string
		addrs []netip.Prefix
		want  []string
	}{
		{"dual stack", []netip.Prefix{nodeV4, nodeV6}, []string{
			"/sbin/ifconfig utun5 inet 100.64.1.2/10 100.64.1.2 alias",
			"/sbin/ifconfig utun5 inet6 fd7a:115c:a1e0::1:2/48 alias",
			"/sbin/ifconfig utun5 up",
			"/sbin/route -n add -inet 100.64.0.0/10 -interface utun5 [exists ok]",
			"/sbin/route -n add -inet6 fd7a:115c:a1e0::/48 -interface utun5 [exists ok]",
		}},
		{"host address routes nothing", []netip.Prefix{netip.MustParsePrefix("100.64.1.2/32")}, []string{
			"/sbin/ifconfig utun5 inet 100.64.1.2/32 100.64.1.2 alias",
			"/sbin/ifconfig utun5 up",
		}},
		{"two addresses in one prefix route it once", []netip.Prefix{nodeV4, nodeV4b}, []string{
			"/sbin/ifconfig utun5 inet 100.64.1.2/10 100.64.1.2 alias",
			"/sbin/ifconfig utun5 inet 100.64.7.9/10 100.64.7.9 alias",
			"/sbin/ifconfig utun5 up",
			"/sbin/route -n add -inet 100.64.0.0/10 -interface utun5 [exists ok]",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := argvs(utunAddCommands("utun5", tt.addrs)); !slices.Equal(got, tt.want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestUtunSetAddrsCommands(t *testing.T) {
	tests := []struct {
		name       string
		have, want []netip.Prefix
		cmds       []string
	}{
		{"IPv4 moves: the new one first, then the old one goes, then the routes again",
			[]netip.Prefix{nodeV4, nodeV6}, []netip.Prefix{nodeV4b, nodeV6}, []string{
				"/sbin/ifconfig utun5 inet 100.64.7.9/10 100.64.7.9 alias",
				"/sbin/ifconfig utun5 inet 100.64.1.2 -alias",
				"/sbin/route -n add -inet 100.64.0.0/10 -interface utun5 [exists ok]",
				"/sbin/route -n add -inet6 fd7a:115c:a1e0::/48 -interface utun5 [exists ok]",
			}},
		{"IPv6 goes", []netip.Prefix{nodeV4, nodeV6}, []netip.Prefix{nodeV4}, []string{
			"/sbin/ifconfig utun5 inet6 fd7a:115c:a1e0::1:2 -alias",
			"/sbin/route -n add -inet 100.64.0.0/10 -interface utun5 [exists ok]",
		}},
		{"nothing changes", []netip.Prefix{nodeV4, nodeV6}, []netip.Prefix{nodeV6, nodeV4}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := argvs(utunSetAddrsCommands("utun5", tt.have, tt.want)); !slices.Equal(got, tt.cmds) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.cmds, "\n"))
			}
		})
	}
}

func TestRouteExists(t *testing.T) {
	if !routeExists("route: writing to routing socket: File exists\nadd net 100.64.0.0: gateway utun5: File exists") {
		t.Error("EEXIST from route(8) not recognised")
	}
	if routeExists("route: writing to routing socket: Network is unreachable") {
		t.Error("another failure taken for an existing route")
	}
}

func TestAddrChanges(t *testing.T) {
	moved := netip.PrefixFrom(nodeV4.Addr(), 16)
	tests := []struct {
		name           string
		have, want     []netip.Prefix
		wantAdd, wantD []netip.Prefix
	}{
		{"from nothing", nil, []netip.Prefix{nodeV4, nodeV6}, []netip.Prefix{nodeV4, nodeV6}, nil},
		{"move", []netip.Prefix{nodeV4, nodeV6}, []netip.Prefix{nodeV4b, nodeV6}, []netip.Prefix{nodeV4b}, []netip.Prefix{nodeV4}},
		{"prefix length change is a remove and an add", []netip.Prefix{nodeV4}, []netip.Prefix{moved}, []netip.Prefix{moved}, []netip.Prefix{nodeV4}},
		{"same", []netip.Prefix{nodeV4}, []netip.Prefix{nodeV4}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			add, del := addrChanges(tt.have, tt.want)
			if !slices.Equal(add, tt.wantAdd) || !slices.Equal(del, tt.wantD) {
				t.Errorf("addrChanges = add %v, del %v; want add %v, del %v", add, del, tt.wantAdd, tt.wantD)
			}
		})
	}
}

func TestMaskBits(t *testing.T) {
	tests := []struct {
		mask []byte
		want int
	}{
		{nil, 0},
		{[]byte{0xff, 0xc0}, 10}, // a routing socket's shortened /10
		{[]byte{0xff, 0xc0, 0, 0}, 10},
		{[]byte{0xff, 0xff, 0xff, 0xff}, 32},
		{[]byte{0xff, 0xff, 0xff, 0xfe}, 31},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 48},
		{[]byte{0xf0, 0xff}, 4}, // not contiguous: the leading ones
	}
	for _, tt := range tests {
		if got := maskBits(tt.mask); got != tt.want {
			t.Errorf("maskBits(%x) = %d, want %d", tt.mask, got, tt.want)
		}
	}
}

// The check each OS's Create runs on the addresses and routes it listed.
func TestFirstConflict(t *testing.T) {
	mesh := []netip.Prefix{nodeV4.Masked(), nodeV6.Masked()}
	pfx := netip.MustParsePrefix
	tests := []struct {
		name     string
		existing []existingNet
		want     *ConflictError // nil: no conflict
	}{
		{"unrelated networks", []existingNet{
			{Prefix: pfx("192.168.1.10/24"), Kind: "address", Interface: "en0"},
			{Prefix: pfx("192.168.1.0/24"), Kind: "route", Interface: "en0"},
			{Prefix: pfx("fe80::1/64"), Kind: "address", Interface: "en0"},
			{Prefix: pfx("224.0.0.0/4"), Kind: "route", Interface: "en0"},
		}, nil},
		{"default routes are not conflicts", []existingNet{
			{Prefix: pfx("0.0.0.0/0"), Kind: "route", Interface: "en0"},
			{Prefix: pfx("::/0"), Kind: "route", Interface: "en0"},
		}, nil},
		{"another VPN's route", []existingNet{
			{Prefix: pfx("100.64.0.0/10"), Kind: "route", Interface: "utun3"},
		}, &ConflictError{Prefix: mesh[0], Existing: pfx("100.64.0.0/10"), Kind: "route", Interface: "utun3"}},
		{"a carrier-grade NAT address", []existingNet{
			{Prefix: pfx("100.72.4.5/16"), Kind: "address", Interface: "Ethernet"},
		}, &ConflictError{Prefix: mesh[0], Existing: pfx("100.72.4.5/16"), Kind: "address", Interface: "Ethernet"}},
		{"a host route inside the prefix, masked", []existingNet{
			{Prefix: pfx("fd7a:115c:a1e0::7/128"), Kind: "route", Interface: "en1"},
		}, &ConflictError{Prefix: mesh[1], Existing: pfx("fd7a:115c:a1e0::7/128"), Kind: "route", Interface: "en1"}},
		{"a wider route containing the prefix", []existingNet{
			{Prefix: pfx("100.0.0.0/8"), Kind: "route", Interface: "en0"},
		}, &ConflictError{Prefix: mesh[0], Existing: pfx("100.0.0.0/8"), Kind: "route", Interface: "en0"}},
		{"a blackhole route", []existingNet{
			{Prefix: pfx("100.64.0.0/16"), Kind: "route", RouteType: "blackhole"},
		}, &ConflictError{Prefix: mesh[0], Existing: pfx("100.64.0.0/16"), Kind: "route", RouteType: "blackhole"}},
		{"invalid entries are skipped", []existingNet{{Kind: "route", Interface: "x"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := firstConflict(mesh, tt.existing)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("firstConflict = %v, want nil", err)
				}
				return
			}
			var ce *ConflictError
			if !errors.As(err, &ce) {
				t.Fatalf("firstConflict = %v, want a *ConflictError", err)
			}
			if *ce != *tt.want {
				t.Fatalf("firstConflict = %+v, want %+v", *ce, *tt.want)
			}
		})
	}
}

func TestWintunMissingError(t *testing.T) {
	cause := errors.New("Unable to load library: The specified module could not be found.")
	tests := []struct {
		goarch, exe string
		want        []string
	}{
		{"amd64", `C:\Program Files\plurenet\plurenet.exe`, []string{"wintun.dll", "Wintun release", "the amd64 folder", "next to plurenet.exe", `C:\Program Files\plurenet`}},
		{"386", "", []string{"the x86 folder", "next to plurenet.exe"}},
		{"arm64", "", []string{"the arm64 folder"}},
		{"amd64", "plurenet.exe", []string{"next to plurenet.exe"}},
	}
	for _, tt := range tests {
		err := wintunMissingError("plurenet0", tt.goarch, tt.exe, cause)
		if !errors.Is(err, cause) {
			t.Errorf("%s: error does not wrap the cause: %v", tt.goarch, err)
		}
		for _, w := range append(tt.want, "--tun", "plurenet0") {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", tt.goarch, err, w)
			}
		}
	}
}

func TestAdapterGUID(t *testing.T) {
	a, b := adapterGUID("plurenet0"), adapterGUID("plurenet0")
	if a != b {
		t.Fatal("the GUID of one name changes between calls")
	}
	if a == adapterGUID("plurenet1") {
		t.Fatal("two names have one GUID")
	}
	if a[6]>>4 != 8 || a[8]>>6 != 2 {
		t.Fatalf("GUID %x: want version 8, variant 10", a)
	}
	if s := fmt.Sprintf("%x", a); s == strings.Repeat("0", 32) {
		t.Fatal("zero GUID")
	}
}
