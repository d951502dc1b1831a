package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plures/plurenet/overlay"
)

// TestDNSSettings reads the names-over-DNS settings from flags, the
// environment and the config file, and refuses bad ones with a usage error.
func TestDNSSettings(t *testing.T) {
	file := writeFile(t, "c.json", `{"topic": "t", "key": "file-secret-0123456789", "relay": "ws://x",
		"dnsSuffix": "Home.Plurenet.", "dnsListen": ["127.0.0.1:5353", "[::1]:5353"], "hostsFile": "hosts"}`)
	abs, err := filepath.Abs("hosts")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want overlay.DNSConfig
		err  string
	}{
		{"file", nil, nil, overlay.DNSConfig{Suffix: "home.plurenet", HostsFile: abs,
			Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:5353"), netip.MustParseAddrPort("[::1]:5353")}}, ""},
		{"env", nil, map[string]string{"PLURENET_DNS_SUFFIX": "lab.example", "PLURENET_DNS_LISTEN": "127.0.0.2:53"}, overlay.DNSConfig{Suffix: "lab.example", HostsFile: abs,
			Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.2:53")}}, ""},
		{"off", []string{"--dns", "off", "--dns-suffix", "", "--hosts-file", ""}, map[string]string{"PLURENET_DNS_LISTEN": ""}, overlay.DNSConfig{}, "--dns off turns names over DNS off"},
		{"bad switch", []string{"--dns", "maybe"}, nil, overlay.DNSConfig{}, `--dns "maybe": want on or off`},
		{"bad suffix", []string{"--dns-suffix", "printer.local"}, nil, overlay.DNSConfig{}, "--dns-suffix"},
		{"listen not loopback", []string{"--dns-listen", "0.0.0.0:53"}, nil, overlay.DNSConfig{}, "not a loopback address"},
		{"listen no port", []string{"--dns-listen", "127.0.0.1"}, nil, overlay.DNSConfig{}, "want a loopback ADDR:PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := resolveUp(t, file, tt.args, tt.env)
			cfg, err := s.nodeConfig(slog.New(slog.NewTextHandler(io.Discard, nil)))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := cfg.DNS
			if got.Off != tt.want.Off || got.Suffix != tt.want.Suffix || got.HostsFile != tt.want.HostsFile || len(got.Listen) != len(tt.want.Listen) {
				t.Fatalf("DNS config %+v, want %+v", got, tt.want)
			}
			for i := range got.Listen {
				if got.Listen[i] != tt.want.Listen[i] {
					t.Fatalf("DNS listen %v, want %v", got.Listen, tt.want.Listen)
				}
			}
		})
	}

	// Off alone is fine.
	s := resolveUp(t, "", []string{"--topic", "t", "--key", "flag-secret-0123456789", "--relay", "ws://x", "--dns", "off"}, nil)
	cfg, err := s.nodeConfig(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil || !cfg.DNS.Off {
		t.Fatalf("--dns off: %+v, %v", cfg.DNS, err)
	}
}

// TestPrintDNS shows where names resolve, in up's banner and in status.
func TestPrintDNS(t *testing.T) {
	var b bytes.Buffer
	printDNS(&b, "plurenet: ", &overlay.DNSStatus{Address: "100.64.0.1:53", Suffix: "home.plurenet", Name: "nas.home.plurenet",
		Listen: []string{"127.0.0.1:5353"}, SplitDNS: true, Ambiguous: []string{"pi.home.plurenet"}})
	want := "plurenet: names: NAME.home.plurenet (this node: nas.home.plurenet), served at 100.64.0.1:53 on the mesh, 127.0.0.1:5353, this host's resolver (systemd-resolved)\n" +
		"plurenet: names claimed by two members, resolving to neither: pi.home.plurenet\n"
	if b.String() != want {
		t.Fatalf("got %q\nwant %q", b.String(), want)
	}
	b.Reset()
	printDNS(&b, "", nil)
	if b.Len() != 0 {
		t.Fatalf("DNS off printed %q", b.String())
	}
}
