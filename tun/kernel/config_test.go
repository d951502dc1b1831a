package kernel

import (
	"net/netip"
	"strings"
	"testing"
)

// Config validation is the same on every OS: Create refuses before it
// touches anything.
func TestConfigValidation(t *testing.T) {
	v4 := []netip.Prefix{nodeV4}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no addresses", Config{}, "no addresses"},
		{"invalid address", Config{Addrs: []netip.Prefix{{}}}, "invalid address"},
		{"prefix length 0", Config{Addrs: []netip.Prefix{netip.MustParsePrefix("100.64.1.2/0")}}, "prefix length 0"},
		{"duplicate", Config{Addrs: []netip.Prefix{nodeV4, nodeV4}}, "given twice"},
		{"name too long", Config{Name: "plurenet-much-too-long", Addrs: v4}, "at most 15"},
		{"name with slash", Config{Name: "a/b", Addrs: v4}, "no spaces"},
		{"MTU too small", Config{MTU: 100, Addrs: v4}, "out of range"},
		{"MTU too large", Config{MTU: 70000, Addrs: v4}, "out of range"},
		{"IPv6 below 1280", Config{MTU: 1200, Addrs: []netip.Prefix{nodeV6}}, "at least 1280"},
		{"IPv4-mapped", Config{Addrs: []netip.Prefix{netip.MustParsePrefix("::ffff:100.64.1.2/106")}}, "give it as IPv4"},
		{"too many addresses", Config{Addrs: make([]netip.Prefix, maxAddrs+1)}, "at most 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Create(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Create error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	t.Run("defaults", func(t *testing.T) {
		cfg, err := Config{Addrs: v4}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Name != DefaultName || cfg.MTU != DefaultMTU || cfg.Logger == nil || cfg.Addrs[0] != nodeV4 {
			t.Errorf("defaults: name %q MTU %d logger %v addrs %v", cfg.Name, cfg.MTU, cfg.Logger, cfg.Addrs)
		}
	})
}
