package netlab

import (
	"net/netip"
	"strings"
	"testing"
)

func TestBroadcast(t *testing.T) {
	tests := []struct{ prefix, want string }{
		{"198.18.0.0/15", "198.19.255.255"},
		{"10.1.0.0/24", "10.1.0.255"},
		{"10.1.0.7/30", "10.1.0.7"},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			if got := broadcast(netip.MustParsePrefix(tt.prefix)); got.String() != tt.want {
				t.Errorf("broadcast(%s) = %s, want %s", tt.prefix, got, tt.want)
			}
		})
	}
}

func TestOwnerPID(t *testing.T) {
	tests := []struct {
		name string
		pid  int
		ok   bool
	}{
		{"pln-1234-1-r1", 1234, true},
		{"pln-99-12-inet", 99, true},
		{"pln-0-1-a", 0, false},
		{"pl-1234-1-a", 0, false},
		{"pln-1234-a", 0, false},
		{"pln-12x4-1-a", 0, false},
		{"pln-1234-1-A", 0, false},
		{"pln-99999999999999999999999-1-a", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pid, ok := ownerPID(tt.name)
			if pid != tt.pid || ok != tt.ok {
				t.Errorf("ownerPID(%q) = %d, %v; want %d, %v", tt.name, pid, ok, tt.pid, tt.ok)
			}
		})
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 8}
	for _, s := range []string{"abc", "defgh", "ijk"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if got := b.String(); got != "defghijk" {
		t.Errorf("tail = %q, want %q", got, "defghijk")
	}
	b.Write([]byte(strings.Repeat("z", 20)))
	if got := b.String(); got != strings.Repeat("z", 8) {
		t.Errorf("tail after a long write = %q", got)
	}
}
