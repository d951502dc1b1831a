package main

import (
	"bytes"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/overlay"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigPrecedence(t *testing.T) {
	file := writeFile(t, "c.json", `{"syncRelay": "ws://file", "syncKey": "file-secret-0123456789",
		"syncTransport": "relay", "topic": "t", "forward": ["1=a:2"], "pluresdbOnly": true}`)
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		wantRelay string
		wantKey   string
		wantFwd   []string
	}{
		{"file alone", nil, nil, "ws://file", "file-secret-0123456789", []string{"1=a:2"}},
		{"env over file", nil, map[string]string{"PLURENET_RELAY": "ws://env", "PLURENET_FORWARD": "3=b:4, 5=c:6"}, "ws://env", "file-secret-0123456789", []string{"3=b:4", "5=c:6"}},
		{"flag over env", []string{"--relay", "ws://flag", "--forward", "7=d:8"}, map[string]string{"PLURENET_RELAY": "ws://env"}, "ws://flag", "file-secret-0123456789", []string{"7=d:8"}},
		{"flag key over file", []string{"--key", "flag-secret-0123456789"}, nil, "ws://file", "flag-secret-0123456789", []string{"1=a:2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := resolveUp(t, file, tt.args, tt.env)
			if s.Relay != tt.wantRelay || s.Key != tt.wantKey || s.Transport != "relay" || s.Topic != "t" {
				t.Fatalf("relay %q key %q transport %q topic %q", s.Relay, s.Key, s.Transport, s.Topic)
			}
			if strings.Join(s.Forward, "|") != strings.Join(tt.wantFwd, "|") {
				t.Fatalf("forward = %q, want %q", s.Forward, tt.wantFwd)
			}
			if len(s.unknownKeys) != 1 || s.unknownKeys[0] != "pluresdbOnly" {
				t.Fatalf("unknown keys = %q", s.unknownKeys)
			}
		})
	}
}

// TestBadInput checks that every kind of bad input gets one clear line and
// a non-zero exit, before anything is started.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	badJSON := writeFile(t, "bad.json", `{"topic": "t",`)
	notObject := writeFile(t, "list.json", `["topic"]`)
	wrongType := writeFile(t, "wrong.json", `{"syncKey": 42}`)
	base := []string{"up", "--state-dir", dir, "--topic", "t", "--key", "0123456789abcdef0123", "--relay", "ws://127.0.0.1:1"}
	with := func(extra ...string) []string { return append(append([]string{}, base...), extra...) }
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"no topic", []string{"up", "--key", "0123456789abcdef0123", "--relay", "ws://x"}, 2, "no topic"},
		{"both topics", with("--topic-hex", strings.Repeat("ab", 32)), 2, "not both"},
		{"bad topic hex", []string{"up", "--topic-hex", "xyz", "--key", "0123456789abcdef0123", "--relay", "ws://x"}, 2, "--topic-hex"},
		{"no key", []string{"up", "--topic", "t", "--relay", "ws://x"}, 2, "no mesh secret"},
		{"short key", []string{"up", "--topic", "t", "--key", "short", "--relay", "ws://x"}, 2, "at least 16"},
		{"mistyped generated key", []string{"up", "--topic", "t", "--key", mesh.GeneratedPrefix + "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8X5A4n", "--relay", "ws://x"}, 2, "mistyped"},
		{"key and open", with("--open"), 2, "not both"},
		{"no relay", []string{"up", "--topic", "t", "--key", "0123456789abcdef0123"}, 2, "no relay"},
		{"relay not ws", []string{"up", "--state-dir", dir, "--topic", "t", "--key", "0123456789abcdef0123", "--relay", "http://x"}, 2, `--relay: relay URL "http://x": the relay speaks WebSocket: write "ws://x"`},
		{"relay no host", []string{"up", "--state-dir", dir, "--topic", "t", "--key", "0123456789abcdef0123", "--relay", "ws://"}, 2, "no host"},
		{"relay user info", with("--relay-fallback", "wss://u:pw@x"), 2, "--relay-fallback: relay URL \"wss://x\": remove the user info"},
		{"bad forward", with("--forward", "8080"), 2, "--forward"},
		{"bad forward port", with("--forward", "8080=alpha:70000"), 2, "--forward"},
		{"bad expose", with("--expose", "http"), 2, "--expose"},
		{"bad transport", with("--transport", "carrier-pigeon"), 2, "want auto, relay or swarm"},
		{"bad ip", with("--ip", "fd00::1"), 2, "--ip"},
		{"bad listen port", with("--listen-port", "99999"), 2, "--listen-port"},
		{"bad stun", with("--stun", "stun.example"), 2, "--stun"},
		{"swarm with relay", with("--transport", "swarm"), 2, "uses no relay"},
		{"old name with relay", with("--transport", "direct"), 2, "--transport swarm uses no relay"},
		{"swarm with stun", []string{"up", "--topic", "t", "--key", "0123456789abcdef0123", "--transport", "swarm", "--stun", "127.0.0.1:3478"}, 2, "no STUN"},
		{"peer without swarm", with("--peer", "192.0.2.1:51898"), 2, "--transport swarm"},
		{"bad peer", []string{"up", "--topic", "t", "--key", "0123456789abcdef0123", "--transport", "swarm", "--peer", "nokey@192.0.2.1:5"}, 2, "--peer"},
		{"peer without port", []string{"up", "--topic", "t", "--key", "0123456789abcdef0123", "--transport", "swarm", "--peer", "192.0.2.1"}, 2, "HOST:PORT"},
		{"bad lan discovery", []string{"up", "--topic", "t", "--key", "0123456789abcdef0123", "--transport", "swarm", "--lan-discovery", "maybe"}, 2, "--lan-discovery"},
		{"dht with relay", with("--transport", "relay", "--dht", "on"), 2, "relay mode sends no UDP"},
		{"dht bootstrap with relay", with("--transport", "relay", "--dht-bootstrap", "192.0.2.1:6881"), 2, "--dht on"},
		{"dht bootstrap in auto without dht", with("--dht-bootstrap", "192.0.2.1:6881"), 2, "--dht on"},
		{"bad dht in auto", with("--dht", "maybe"), 2, "--dht"},
		{"bad dht", []string{"up", "--topic", "t", "--key", "0123456789abcdef0123", "--transport", "swarm", "--dht", "maybe"}, 2, "--dht"},
		{"dht bootstrap without port", []string{"up", "--topic", "t", "--key", "0123456789abcdef0123", "--transport", "swarm", "--dht-bootstrap", "192.0.2.1"}, 2, "HOST:PORT"},
		{"dht bootstrap with dht off", []string{"up", "--topic", "t", "--key", "0123456789abcdef0123", "--transport", "swarm", "--dht", "off", "--dht-bootstrap", "192.0.2.1:6881"}, 2, "--dht off"},
		{"dht-node bad bootstrap", []string{"dht-node", "--bootstrap", "nope"}, 2, "HOST:PORT"},
		{"ip outside prefix", with("--ip", "10.0.0.1"), 1, "outside the mesh prefix"},
		{"bad prefix", with("--ipv4-prefix", "100.64.0.0"), 2, "--ipv4-prefix"},
		{"bad log level", with("--log-level", "loud"), 2, "log level"},
		{"missing config", with("--config", filepath.Join(dir, "nope.json")), 1, "config file"},
		{"malformed config", with("--config", badJSON), 1, "not valid JSON"},
		{"config not object", with("--config", notObject), 1, "want a JSON object"},
		{"config wrong type", with("--config", wrongType), 1, `key "syncKey": want a string`},
		{"missing ca file", with("--ca-file", filepath.Join(dir, "nope.pem")), 1, "--ca-file"},
		{"unknown flag", with("--frobnicate"), 2, "frobnicate"},
		{"stray argument", with("extra"), 2, "unexpected argument"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
		{"key without subcommand", []string{"key"}, 2, "key generate"},
		{"status nothing running", []string{"status", "--state-dir", dir}, 1, "no plurenet node is running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("stderr %q does not mention %q", stderr.String(), tt.want)
			}
			if strings.Contains(stderr.String(), "panic") || strings.Contains(stderr.String(), "goroutine ") {
				t.Fatalf("stderr looks like a crash: %s", stderr.String())
			}
		})
	}
}

func TestKeyGenerate(t *testing.T) {
	seen := map[string]bool{}
	for range 3 {
		var out bytes.Buffer
		if code := run([]string{"key", "generate"}, &out, &out); code != 0 {
			t.Fatalf("exit %d: %s", code, out.String())
		}
		k := strings.TrimSpace(out.String())
		if kind, _, err := mesh.ClassifySecret(k); kind != mesh.SecretGenerated || err != nil || seen[k] {
			t.Fatalf("secret %q: want a fresh generated secret (%v, %v)", k, kind, err)
		}
		seen[k] = true
	}
}

// TestSwarmSettings checks how --peer and --lan-discovery reach the node
// config from flags, the environment and the config file, and that the old
// name of swarm mode (a config file that says "direct") still works, with
// one line saying so.
func TestSwarmSettings(t *testing.T) {
	const key = "hT1kZ2Tl9QpRCHNzIcUeCKkT3YgT3lG7RXjZzx6hwQI="
	file := writeFile(t, "c.json", `{"syncTransport": "direct", "syncKey": "file-secret-0123456789", "topic": "t",
		"peers": ["`+key+`@192.0.2.1:51898", "nas.local:51898"], "lanDiscovery": "off"}`)
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		wantPeers []string
		wantNoLAN bool
		renamed   bool // the old name was used
	}{
		{"file", nil, nil, []string{key + "@192.0.2.1:51898", "nas.local:51898"}, true, true},
		{"env list", nil, map[string]string{"PLURENET_PEER": "192.0.2.7:1, 192.0.2.8:2", "PLURENET_LAN_DISCOVERY": "on", "PLURENET_TRANSPORT": "swarm"}, []string{"192.0.2.7:1", "192.0.2.8:2"}, false, false},
		{"flags", []string{"--transport", "swarm", "--peer", "192.0.2.9:3", "--peer", key + "@192.0.2.10:4"}, nil, []string{"192.0.2.9:3", key + "@192.0.2.10:4"}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := resolveUp(t, file, tt.args, tt.env)
			var logged bytes.Buffer
			cfg, err := s.nodeConfig(slog.New(slog.NewTextHandler(&logged, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(logged.String(), overlay.SwarmRenamedNotice); n != map[bool]int{true: 1}[tt.renamed] {
				t.Fatalf("logged the renaming notice %d times: %q", n, logged.String())
			}
			if cfg.Transport != overlay.TransportSwarm || len(cfg.Relays) != 0 || cfg.NoLAN != tt.wantNoLAN {
				t.Fatalf("transport %q relays %q noLAN %v", cfg.Transport, cfg.Relays, cfg.NoLAN)
			}
			if strings.Join(cfg.Peers, "|") != strings.Join(tt.wantPeers, "|") {
				t.Fatalf("peers = %q, want %q", cfg.Peers, tt.wantPeers)
			}
		})
	}
}

// TestDHTSettings: the DHT is on by default in swarm mode only; --dht on
// turns it on beside the relays in auto mode, with its bootstrap nodes.
func TestDHTSettings(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantDHT  bool
		wantBoot []string
	}{
		{"swarm default", []string{"--transport", "swarm"}, true, nil},
		{"swarm off", []string{"--transport", "swarm", "--dht", "off"}, false, nil},
		{"auto default", []string{"--relay", "ws://127.0.0.1:1"}, false, nil},
		{"relay default", []string{"--relay", "ws://127.0.0.1:1", "--transport", "relay"}, false, nil},
		{"auto on", []string{"--relay", "ws://127.0.0.1:1", "--dht", "on", "--dht-bootstrap", "192.0.2.1:6881, 192.0.2.2:6881"}, true, []string{"192.0.2.1:6881", "192.0.2.2:6881"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--topic", "t", "--key", "0123456789abcdef0123"}, tt.args...)
			s := resolveUp(t, writeFile(t, "c.json", "{}"), args, nil)
			cfg, err := s.nodeConfig(slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.DHT != tt.wantDHT || strings.Join(cfg.DHTBootstrap, "|") != strings.Join(tt.wantBoot, "|") {
				t.Fatalf("DHT %v bootstrap %q; want %v %q", cfg.DHT, cfg.DHTBootstrap, tt.wantDHT, tt.wantBoot)
			}
		})
	}
}

// TestDemo runs "plurenet demo" as the README tells a newcomer to.
func TestDemo(t *testing.T) {
	var out, errs bytes.Buffer
	if code := run([]string{"demo"}, &out, &errs); code != 0 {
		t.Fatalf("demo exit %d\nstdout: %s\nstderr: %s", code, out.String(), errs.String())
	}
	// Whether the first exchange beats ICE to it is a race; the demo
	// must end on the direct path either way.
	for _, want := range []string{"went direct", "demo ok", "the path is now direct"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

// resolveUp resolves up's settings from the config file, args and env as
// "plurenet up --config file args..." would.
func resolveUp(t *testing.T, file string, args []string, env map[string]string) *upSettings {
	t.Helper()
	var s upSettings
	var configPath string
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	s.registerFlags(fs, &configPath)
	if err := fs.Parse(append([]string{"--config", file}, args...)); err != nil {
		t.Fatal(err)
	}
	if err := s.resolve(fs, configPath, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	return &s
}
