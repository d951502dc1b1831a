package main

import (
	"errors"
	"flag"
	"slices"
	"testing"

	"github.com/plures/plurenet/portmap"
)

// TestPortMappingSetting: port mapping is on by default in auto mode, off
// with --port-mapping off (flag, environment or file), always off in relay
// mode (which sends no UDP at all) and direct mode, and asking for it there
// is a usage error.
func TestPortMappingSetting(t *testing.T) {
	file := writeFile(t, "pm.json", `{"portMapping": "off"}`)
	base := []string{"--topic", "t", "--key", "0123456789abcdef0123", "--relay", "ws://127.0.0.1:1"}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantOff bool
		wantErr bool
	}{
		{"auto default", nil, nil, false, false},
		{"auto on", []string{"--port-mapping", "on"}, nil, false, false},
		{"auto off", []string{"--port-mapping", "off"}, nil, true, false},
		{"env off", nil, map[string]string{"PLURENET_PORT_MAPPING": "off"}, true, false},
		{"file off", []string{"--config", file}, nil, true, false},
		{"flag beats file", []string{"--config", file, "--port-mapping", "on"}, nil, false, false},
		{"relay", []string{"--transport", "relay"}, nil, true, false},
		{"relay on", []string{"--transport", "relay", "--port-mapping", "on"}, nil, false, true},
		{"bad value", []string{"--port-mapping", "yes"}, nil, false, true},
		{"protocols", []string{"--port-mapping", "pcp, nat-pmp"}, nil, false, false},
		{"protocol twice", []string{"--port-mapping", "pcp,pcp"}, nil, false, true},
		{"unknown protocol", []string{"--port-mapping", "igd"}, nil, false, true},
		{"relay with protocols", []string{"--transport", "relay", "--port-mapping", "upnp"}, nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s upSettings
			var configPath string
			fs := flag.NewFlagSet("up", flag.ContinueOnError)
			s.registerFlags(fs, &configPath)
			if err := fs.Parse(append(append([]string{}, base...), tt.args...)); err != nil {
				t.Fatal(err)
			}
			if err := s.resolve(fs, configPath, func(k string) string { return tt.env[k] }); err != nil {
				t.Fatal(err)
			}
			cfg, err := s.nodeConfig(quietLogger())
			if tt.wantErr {
				if !errors.Is(err, errUsage) {
					t.Fatalf("err = %v; want a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.NoPortMapping != tt.wantOff {
				t.Fatalf("NoPortMapping = %v, want %v", cfg.NoPortMapping, tt.wantOff)
			}
			want := []portmap.Protocol(nil)
			if tt.name == "protocols" {
				want = []portmap.Protocol{portmap.PCP, portmap.NATPMP}
			}
			if !slices.Equal(cfg.PortMappingProtocols, want) {
				t.Fatalf("protocols %q, want %q", cfg.PortMappingProtocols, want)
			}
		})
	}
	// Direct mode: on is refused too.
	var s upSettings
	var configPath string
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	s.registerFlags(fs, &configPath)
	if err := fs.Parse([]string{"--topic", "t", "--key", "0123456789abcdef0123", "--transport", "direct", "--port-mapping", "on"}); err != nil {
		t.Fatal(err)
	}
	if err := s.resolve(fs, configPath, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.nodeConfig(quietLogger()); !errors.Is(err, errUsage) {
		t.Fatalf("--transport direct --port-mapping on: %v; want a usage error", err)
	}
}
