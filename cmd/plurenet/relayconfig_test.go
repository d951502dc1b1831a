package main

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/plures/plurenet/relayserver"
)

// parseRelay runs the relay's settings table on args, env and (when not
// empty) a config file with the given JSON.
func parseRelay(t *testing.T, args []string, env map[string]string, fileJSON string) (relayRun, error) {
	t.Helper()
	if fileJSON != "" {
		args = append([]string{"--config", writeFile(t, "relay.json", fileJSON)}, args...)
	}
	return newRelaySettings().parse(args, func(k string) string { return env[k] })
}

func TestRelaySettingsDefaults(t *testing.T) {
	r, err := parseRelay(t, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	want := relayserver.Config{
		MaxConnsPerKey:      relayserver.DefaultMaxConnsPerKey,
		MaxConns:            relayserver.DefaultMaxConns,
		RateBytesPerSec:     relayserver.DefaultRateBytesPerSec,
		DrainGrace:          relayserver.DefaultDrainGrace,
		MaxConnsPerIP:       relayserver.DefaultMaxConnsPerIP,
		HandshakeRatePerIP:  relayserver.DefaultHandshakeRatePerIP,
		HandshakeBurstPerIP: relayserver.DefaultHandshakeBurstPerIP,
		MaxConnsPer56:       relayserver.DefaultNet56Factor * relayserver.DefaultMaxConnsPerIP,
		MaxConnsPer48:       relayserver.DefaultNet48Factor * relayserver.DefaultMaxConnsPerIP,

		MaxMembersPerRendezvous: relayserver.DefaultMaxMembersPerRendezvous,
	}
	if r.cfg != want {
		t.Fatalf("defaults give\n%+v, want\n%+v", r.cfg, want)
	}
	if r.listen != "127.0.0.1:8080" || r.stunListen != ":3478" || r.logLevel != "info" || r.certFile != "" || r.metricsListen != "" {
		t.Fatalf("listen %q stun %q log %q cert %q metrics %q", r.listen, r.stunListen, r.logLevel, r.certFile, r.metricsListen)
	}
}

// TestRelaySettingsPrecedence: flags over the environment over the file,
// setting by setting, as for "plurenet up".
func TestRelaySettingsPrecedence(t *testing.T) {
	file := `{"listen": "127.0.0.1:1", "rate": 1000, "maxConns": "77", "drainGrace": "9s",
		"trustProxyHeaders": true, "backplane": "redis://file:6379/0", "logLevel": "warn",
		"maxMembers": 50, "metricsListen": "127.0.0.1:9", "maxConnsPer48": "unlimited"}`
	env := map[string]string{"PLURENET_RELAY_RATE": "2000", "PLURENET_RELAY_LISTEN": "127.0.0.1:2", "PLURENET_RELAY_MAX_CONNS_PER_KEY": "3",
		"PLURENET_RELAY_METRICS_LISTEN": "127.0.0.1:9090", "PLURENET_RELAY_MAX_CONNS_PER_56": "8"}
	r, err := parseRelay(t, []string{"--listen", "127.0.0.1:3", "--max-conns-per-56", "9"}, env, file)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("listen=%s rate=%d maxConns=%d perKey=%d grace=%v trust=%v backplane=%s log=%s members=%d metrics=%s per56=%d per48=%d",
		r.listen, r.cfg.RateBytesPerSec, r.cfg.MaxConns, r.cfg.MaxConnsPerKey, r.cfg.DrainGrace, r.cfg.TrustProxyHeaders, r.cfg.Backplane, r.logLevel,
		r.cfg.MaxMembersPerRendezvous, r.metricsListen, r.cfg.MaxConnsPer56, r.cfg.MaxConnsPer48)
	want := "listen=127.0.0.1:3 rate=2000 maxConns=77 perKey=3 grace=9s trust=true backplane=redis://file:6379/0 log=warn members=50 metrics=127.0.0.1:9090 per56=9 per48=-1"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// The config file can come from the environment too, under its own
	// name (not up's PLURENET_CONFIG).
	path := writeFile(t, "r.json", `{"maxConnsPerIP": 7}`)
	for _, e := range []map[string]string{{"PLURENET_RELAY_CONFIG": path}, {"PLURENET_CONFIG": path}} {
		r, err := newRelaySettings().parse(nil, func(k string) string { return e[k] })
		if err != nil {
			t.Fatal(err)
		}
		_, relayEnv := e["PLURENET_RELAY_CONFIG"]
		if (r.cfg.MaxConnsPerIP == 7) != relayEnv {
			t.Fatalf("with %v: MaxConnsPerIP %d", e, r.cfg.MaxConnsPerIP)
		}
	}
}

// TestRelayUnlimited: every limit that can be switched off is switched off
// by the word "unlimited" or by 0 (the older spelling), from every source,
// and reaches relayserver.Config as relayserver.Unlimited.
func TestRelayUnlimited(t *testing.T) {
	limits := []struct {
		flag, env, key string
		get            func(relayserver.Config) float64
	}{
		{"rate", "PLURENET_RELAY_RATE", "rate", func(c relayserver.Config) float64 { return float64(c.RateBytesPerSec) }},
		{"max-conns-per-ip", "PLURENET_RELAY_MAX_CONNS_PER_IP", "maxConnsPerIP", func(c relayserver.Config) float64 { return float64(c.MaxConnsPerIP) }},
		{"handshake-rate-per-ip", "PLURENET_RELAY_HANDSHAKE_RATE_PER_IP", "handshakeRatePerIP", func(c relayserver.Config) float64 { return c.HandshakeRatePerIP }},
		{"max-conns-per-56", "PLURENET_RELAY_MAX_CONNS_PER_56", "maxConnsPer56", func(c relayserver.Config) float64 { return float64(c.MaxConnsPer56) }},
		{"max-conns-per-48", "PLURENET_RELAY_MAX_CONNS_PER_48", "maxConnsPer48", func(c relayserver.Config) float64 { return float64(c.MaxConnsPer48) }},
	}
	for _, l := range limits {
		for _, src := range []struct {
			name string
			args []string
			env  map[string]string
			file string
			want float64
		}{
			{"flag word", []string{"--" + l.flag, "unlimited"}, nil, "", relayserver.Unlimited},
			{"flag zero", []string{"--" + l.flag, "0"}, nil, "", relayserver.Unlimited},
			{"env word", nil, map[string]string{l.env: "unlimited"}, "", relayserver.Unlimited},
			{"env zero", nil, map[string]string{l.env: "0"}, "", relayserver.Unlimited},
			{"file word", nil, nil, fmt.Sprintf(`{%q: "unlimited"}`, l.key), relayserver.Unlimited},
			{"file zero", nil, nil, fmt.Sprintf(`{%q: 0}`, l.key), relayserver.Unlimited},
			{"flag number", []string{"--" + l.flag, "12"}, nil, "", 12},
			{"file number", nil, nil, fmt.Sprintf(`{%q: 13}`, l.key), 13},
		} {
			t.Run(l.flag+"/"+src.name, func(t *testing.T) {
				r, err := parseRelay(t, src.args, src.env, src.file)
				if err != nil {
					t.Fatal(err)
				}
				if got := l.get(r.cfg); got != src.want {
					t.Fatalf("%s = %v, want %v", l.flag, got, src.want)
				}
				// What the CLI hands over, relayserver accepts.
				srv, err := relayserver.New(r.cfg)
				if err != nil {
					t.Fatalf("relayserver.New refuses the CLI's config: %v", err)
				}
				srv.Close()
			})
		}
	}
}

func TestRelaySettingsSwitches(t *testing.T) {
	for _, c := range []struct {
		name      string
		args      []string
		env       map[string]string
		file      string
		wantSTUN  string
		wantTrust bool
	}{
		{"stun off by flag", []string{"--stun-listen="}, nil, "", "", false},
		{"stun off by env", nil, map[string]string{"PLURENET_RELAY_STUN_LISTEN": "off"}, "", "", false},
		{"stun off by file", nil, nil, `{"stunListen": "off"}`, "", false},
		{"stun empty in file", nil, nil, `{"stunListen": ""}`, "", false},
		{"stun moved by env", nil, map[string]string{"PLURENET_RELAY_STUN_LISTEN": ":3479"}, "", ":3479", false},
		{"trust by bare flag", []string{"--trust-proxy-headers"}, nil, "", ":3478", true},
		{"trust flag false over file", []string{"--trust-proxy-headers=false"}, nil, `{"trustProxyHeaders": true}`, ":3478", false},
		{"trust by env", nil, map[string]string{"PLURENET_RELAY_TRUST_PROXY_HEADERS": "true"}, "", ":3478", true},
		{"trust by file string", nil, nil, `{"trustProxyHeaders": "1"}`, ":3478", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := parseRelay(t, c.args, c.env, c.file)
			if err != nil {
				t.Fatal(err)
			}
			if r.stunListen != c.wantSTUN || r.cfg.TrustProxyHeaders != c.wantTrust {
				t.Fatalf("stun %q trust %v, want %q %v", r.stunListen, r.cfg.TrustProxyHeaders, c.wantSTUN, c.wantTrust)
			}
		})
	}
}

// TestRelayBadSettings: a bad value is refused with an error that names
// where it came from.
func TestRelayBadSettings(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
		file string
		want string
	}{
		{"negative rate", []string{"--rate", "-5"}, nil, "", `--rate "-5": want a whole number of at least 1, or "unlimited"`},
		{"rate word from env", nil, map[string]string{"PLURENET_RELAY_RATE": "fast"}, "", `PLURENET_RELAY_RATE "fast"`},
		{"per-key zero", []string{"--max-conns-per-key", "0"}, nil, "", `--max-conns-per-key "0": want a whole number of at least 1`},
		{"max conns unlimited", nil, nil, `{"maxConns": "unlimited"}`, `"maxConns" in `},
		{"burst fraction", []string{"--handshake-burst-per-ip", "1.5"}, nil, "", "--handshake-burst-per-ip"},
		{"rate per ip negative", []string{"--handshake-rate-per-ip", "-1"}, nil, "", `--handshake-rate-per-ip "-1": want a number per second`},
		{"rate per ip NaN", []string{"--handshake-rate-per-ip", "NaN"}, nil, "", "--handshake-rate-per-ip"},
		{"lifetime short", []string{"--max-conn-lifetime", "10ms"}, nil, "", "under a second"},
		{"lifetime bad", nil, map[string]string{"PLURENET_RELAY_MAX_CONN_LIFETIME": "forever"}, "", `PLURENET_RELAY_MAX_CONN_LIFETIME "forever"`},
		{"grace zero", []string{"--drain-grace", "0"}, nil, "", `--drain-grace "0": want a positive duration`},
		{"trust maybe", nil, map[string]string{"PLURENET_RELAY_TRUST_PROXY_HEADERS": "maybe"}, "", `PLURENET_RELAY_TRUST_PROXY_HEADERS "maybe": want true or false`},
		{"trust flag maybe", []string{"--trust-proxy-headers=maybe"}, nil, "", "want true or false"},
		{"trust file number", nil, nil, `{"trustProxyHeaders": 1}`, `key "trustProxyHeaders": want true or false`},
		{"rate file object", nil, nil, `{"rate": {}}`, `key "rate": want a number or a string`},
		{"listen file number", nil, nil, `{"listen": 8080}`, `key "listen": want a string`},
		{"cert without key", []string{"--tls-cert", "c.pem"}, nil, "", "go together"},
		{"empty listen", nil, nil, `{"listen": ""}`, `"listen" in`},
		{"unknown key", nil, nil, `{"maxConnPerIP": 5}`, `unknown key(s) maxConnPerIP`},
		{"members zero", []string{"--max-members", "0"}, nil, "", `--max-members "0": want a whole number of at least 1`},
		{"members unlimited", nil, map[string]string{"PLURENET_RELAY_MAX_MEMBERS": "unlimited"}, "", `PLURENET_RELAY_MAX_MEMBERS "unlimited"`},
		{"per-56 negative", nil, nil, `{"maxConnsPer56": -2}`, `"maxConnsPer56" in `},
		{"metrics on the relay listener", nil, map[string]string{"PLURENET_RELAY_LISTEN": ":8443"}, `{"metricsListen": ":8443"}`, `must differ from PLURENET_RELAY_LISTEN`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseRelay(t, c.args, c.env, c.file)
			if err == nil {
				t.Fatal("accepted")
			}
			// A broken file is an error of its own (exit 1), as for up;
			// everything else is a usage error (exit 2).
			if !errors.Is(err, errUsage) && !strings.HasPrefix(err.Error(), "config file ") {
				t.Errorf("%v is not a usage error", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not contain %q", err, c.want)
			}
		})
	}
}

// TestRelayFromConfigFile runs "plurenet relay --config FILE" for real: it
// listens where the file says and serves.
func TestRelayFromConfigFile(t *testing.T) {
	file := writeFile(t, "relay.json", `{"listen": "127.0.0.1:0", "stunListen": "off", "rate": "unlimited", "logLevel": "error"}`)
	relayAddr, _ := startRelayCmd(t, "--config", file)
	if code, body := httpGet(t, "http://"+relayAddr+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
}
