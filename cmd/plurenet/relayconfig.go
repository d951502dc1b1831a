package main

import (
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/plures/plurenet/relayserver"
)

// relaySettings is everything "plurenet relay" can be told, through the same
// table as "plurenet up": a flag, a PLURENET_RELAY_* environment variable or
// a key of the JSON file given with --config (or PLURENET_RELAY_CONFIG), in
// that order of precedence. Values are text until relayConfig checks them.
type relaySettings struct {
	Listen              string
	STUNListen          string
	TLSCert             string
	TLSKey              string
	MaxConnsPerKey      string
	MaxConns            string
	Rate                string
	MaxConnLifetime     string
	DrainGrace          string
	Backplane           string
	BackplaneFile       string
	TrustProxyHeaders   string
	MaxConnsPerIP       string
	HandshakeRatePerIP  string
	HandshakeBurstPerIP string
	MaxConnsPer56       string
	MaxConnsPer48       string
	MaxMembers          string
	MetricsListen       string
	LogLevel            string

	res resolved
}

// relayConfigEnv names the relay's config file in the environment. It is
// not PLURENET_CONFIG, so that a host running a node and a relay can point
// each at its own file.
const relayConfigEnv = "PLURENET_RELAY_CONFIG"

// unlimitedWord switches off a limit on the command line, in the
// environment and in the file; 0 does too, as it always has in "plurenet
// relay" and in the Node relay. Both become relayserver.Unlimited.
const unlimitedWord = "unlimited"

// stunOffWord switches the STUN responder off where an empty value cannot
// be given (the environment, where empty means unset).
const stunOffWord = "off"

// newRelaySettings returns the settings at their defaults, which the flags
// then show in -h.
func newRelaySettings() *relaySettings {
	return &relaySettings{
		Listen:              "127.0.0.1:8080",
		STUNListen:          ":3478",
		MaxConnsPerKey:      strconv.Itoa(relayserver.DefaultMaxConnsPerKey),
		MaxConns:            strconv.Itoa(relayserver.DefaultMaxConns),
		Rate:                strconv.Itoa(relayserver.DefaultRateBytesPerSec),
		MaxConnLifetime:     "0",
		DrainGrace:          relayserver.DefaultDrainGrace.String(),
		TrustProxyHeaders:   "false",
		MaxConnsPerIP:       strconv.Itoa(relayserver.DefaultMaxConnsPerIP),
		HandshakeRatePerIP:  strconv.Itoa(relayserver.DefaultHandshakeRatePerIP),
		HandshakeBurstPerIP: strconv.Itoa(relayserver.DefaultHandshakeBurstPerIP),
		MaxConnsPer56:       strconv.Itoa(relayserver.DefaultNet56Factor * relayserver.DefaultMaxConnsPerIP),
		MaxConnsPer48:       strconv.Itoa(relayserver.DefaultNet48Factor * relayserver.DefaultMaxConnsPerIP),
		MaxMembers:          strconv.Itoa(relayserver.DefaultMaxMembersPerRendezvous),
		LogLevel:            "info",
	}
}

func (s *relaySettings) table() []setting {
	return []setting{
		{flag: "listen", env: "PLURENET_RELAY_LISTEN", fileKeys: []string{"listen"}, usage: "TCP `address` to listen on; use :443 with TLS in production", str: &s.Listen},
		{flag: "stun-listen", env: "PLURENET_RELAY_STUN_LISTEN", fileKeys: []string{"stunListen"}, usage: "UDP `address` of the STUN responder members use to learn their public address for direct paths; \"off\" (or an empty value) disables it", str: &s.STUNListen},
		{flag: "tls-cert", env: "PLURENET_RELAY_TLS_CERT", fileKeys: []string{"tlsCert"}, usage: "TLS certificate `file` (PEM); serves wss:// with --tls-key", str: &s.TLSCert},
		{flag: "tls-key", env: "PLURENET_RELAY_TLS_KEY", fileKeys: []string{"tlsKey"}, usage: "TLS private key `file` (PEM)", str: &s.TLSKey},
		{flag: "max-conns-per-key", env: "PLURENET_RELAY_MAX_CONNS_PER_KEY", fileKeys: []string{"maxConnsPerKey"}, usage: "`number` of connections one key may hold in one rendezvous", str: &s.MaxConnsPerKey, kind: kindNumber},
		{flag: "max-conns", env: "PLURENET_RELAY_MAX_CONNS", fileKeys: []string{"maxConns"}, usage: "`number` of connections this instance accepts", str: &s.MaxConns, kind: kindNumber},
		{flag: "rate", env: "PLURENET_RELAY_RATE", fileKeys: []string{"rate"}, usage: "`bytes` per second accepted from one connection, or \"unlimited\" (0 too)", str: &s.Rate, kind: kindNumber},
		{flag: "max-conn-lifetime", env: "PLURENET_RELAY_MAX_CONN_LIFETIME", fileKeys: []string{"maxConnLifetime"}, usage: "drain each connection at this `age`, e.g. 30m (0: never)", str: &s.MaxConnLifetime},
		{flag: "drain-grace", env: "PLURENET_RELAY_DRAIN_GRACE", fileKeys: []string{"drainGrace"}, usage: "`time` a drained client gets to reconnect elsewhere", str: &s.DrainGrace},
		{flag: "backplane", env: "PLURENET_RELAY_BACKPLANE", fileKeys: []string{"backplane"}, usage: "Redis `URL` (redis://HOST:6379/0, rediss:// for TLS) shared by several relay instances; empty for a single instance", str: &s.Backplane},
		{flag: "backplane-file", env: "PLURENET_RELAY_BACKPLANE_FILE", fileKeys: []string{"backplaneFile"}, usage: "`file` holding the backplane URL on one line (mode 0600): keeps its password out of the process list", str: &s.BackplaneFile},
		{flag: "trust-proxy-headers", env: "PLURENET_RELAY_TRUST_PROXY_HEADERS", fileKeys: []string{"trustProxyHeaders"}, usage: "take the client address from the last X-Forwarded-For entry (only behind a proxy that always sets it)", str: &s.TrustProxyHeaders, kind: kindBool},
		{flag: "max-conns-per-ip", env: "PLURENET_RELAY_MAX_CONNS_PER_IP", fileKeys: []string{"maxConnsPerIP"}, usage: "`number` of connections one client address (IPv4, or IPv6 /64) may hold, or \"unlimited\" (0 too)", str: &s.MaxConnsPerIP, kind: kindNumber},
		{flag: "handshake-rate-per-ip", env: "PLURENET_RELAY_HANDSHAKE_RATE_PER_IP", fileKeys: []string{"handshakeRatePerIP"}, usage: "connection `attempts` per second from one client address, or \"unlimited\" (0 too)", str: &s.HandshakeRatePerIP, kind: kindNumber},
		{flag: "handshake-burst-per-ip", env: "PLURENET_RELAY_HANDSHAKE_BURST_PER_IP", fileKeys: []string{"handshakeBurstPerIP"}, usage: "connection `attempts` one client address may make at once before the per-second rate applies", str: &s.HandshakeBurstPerIP, kind: kindNumber},
		{flag: "max-conns-per-56", env: "PLURENET_RELAY_MAX_CONNS_PER_56", fileKeys: []string{"maxConnsPer56"}, usage: "`number` of connections all the addresses of one IPv6 /56 (a home's usual delegation) may hold, or \"unlimited\" (0 too)", str: &s.MaxConnsPer56, kind: kindNumber},
		{flag: "max-conns-per-48", env: "PLURENET_RELAY_MAX_CONNS_PER_48", fileKeys: []string{"maxConnsPer48"}, usage: "`number` of connections all the addresses of one IPv6 /48 (a site) may hold, or \"unlimited\" (0 too)", str: &s.MaxConnsPer48, kind: kindNumber},
		{flag: "max-members", env: "PLURENET_RELAY_MAX_MEMBERS", fileKeys: []string{"maxMembers"}, usage: "`number` of member keys one rendezvous may hold (across instances with --backplane); a new key beyond it is refused", str: &s.MaxMembers, kind: kindNumber},
		{flag: "metrics-listen", env: "PLURENET_RELAY_METRICS_LISTEN", fileKeys: []string{"metricsListen"}, usage: "TCP `address` for GET /metrics (Prometheus), e.g. 127.0.0.1:9090 or a private address; empty (the default) serves no metrics. Never the --listen address: clients would read them", str: &s.MetricsListen},
		{flag: "log-level", env: "PLURENET_RELAY_LOG_LEVEL", fileKeys: []string{"logLevel"}, usage: "log `level`: debug, info, warn or error", str: &s.LogLevel},
	}
}

// relayRun is what runRelay needs beyond the server's Config.
type relayRun struct {
	listen, stunListen string // stunListen "" means no STUN responder
	// metricsListen "" means no metrics listener: the metrics tell
	// whoever reads them how many clients the relay serves.
	metricsListen string
	// listenFrom, stunFrom and metricsFrom name where the addresses came
	// from, for the errors of listening on them.
	listenFrom, stunFrom, metricsFrom string
	certFile, keyFile                 string
	logLevel                          string
	// backplaneFile holds the backplane URL; backplaneFromFlag says the
	// URL itself came from the command line (a warning: other local users
	// can read it there).
	backplaneFile     string
	backplaneFromFlag bool
	cfg               relayserver.Config
}

// parse reads the flags in args, then the environment and the config
// file, and checks every value.
func (s *relaySettings) parse(args []string, getenv func(string) string) (relayRun, error) {
	var configPath string
	fs := newFlagSet("relay")
	table := s.table()
	registerSettings(fs, table, &configPath, relayConfigEnv)
	if err := parseFlags(fs, args); err != nil {
		return relayRun{}, err
	}
	res, err := resolveSettings(fs, table, configPath, relayConfigEnv, getenv)
	if err != nil {
		return relayRun{}, err
	}
	s.res = res
	if len(res.unknownKeys) > 0 {
		// The relay's file is its own (unlike up's, which may be a
		// PluresDB seed config): a key nothing reads is a typo that
		// would silently leave a limit at its default.
		var known []string
		for _, st := range table {
			known = append(known, st.fileKeys...)
		}
		return relayRun{}, fmt.Errorf("config file %s: unknown key(s) %s; the relay's keys are %s", res.configPath, strings.Join(res.unknownKeys, ", "), strings.Join(known, ", "))
	}
	return s.check()
}

// check turns the resolved text into a relayRun, naming the source of the
// first bad value.
func (s *relaySettings) check() (relayRun, error) {
	r := relayRun{
		listen: s.Listen, stunListen: s.STUNListen, metricsListen: strings.TrimSpace(s.MetricsListen),
		listenFrom: s.res.source("listen"), stunFrom: s.res.source("stun-listen"), metricsFrom: s.res.source("metrics-listen"),
		certFile: s.TLSCert, keyFile: s.TLSKey, logLevel: s.LogLevel,
	}
	if r.stunListen == stunOffWord {
		r.stunListen = ""
	}
	if r.listen == "" {
		return r, usageErrorf("%s is empty: give a TCP address such as :443", s.res.source("listen"))
	}
	if (r.certFile == "") != (r.keyFile == "") {
		return r, usageErrorf("--tls-cert and --tls-key go together")
	}
	// Port 0 picks a free port for each, so two ":0" never meet.
	if r.metricsListen != "" && r.metricsListen == r.listen && !strings.HasSuffix(r.listen, ":0") {
		return r, usageErrorf("%s %q must differ from %s: clients must not read the metrics", r.metricsFrom, r.metricsListen, r.listenFrom)
	}
	c := &r.cfg
	c.Backplane = s.Backplane
	r.backplaneFile = s.BackplaneFile
	r.backplaneFromFlag = s.Backplane != "" && s.res.source("backplane") == "--backplane"
	var err error
	if c.TrustProxyHeaders, err = strconv.ParseBool(s.TrustProxyHeaders); err != nil {
		return r, usageErrorf("%s %q: want true or false", s.res.source("trust-proxy-headers"), s.TrustProxyHeaders)
	}
	for _, n := range []struct {
		flag      string
		val       string
		dst       *int
		unlimited bool // "unlimited" and 0 mean relayserver.Unlimited
	}{
		{"max-conns-per-key", s.MaxConnsPerKey, &c.MaxConnsPerKey, false},
		{"max-conns", s.MaxConns, &c.MaxConns, false},
		{"rate", s.Rate, &c.RateBytesPerSec, true},
		{"max-conns-per-ip", s.MaxConnsPerIP, &c.MaxConnsPerIP, true},
		{"handshake-burst-per-ip", s.HandshakeBurstPerIP, &c.HandshakeBurstPerIP, false},
		{"max-conns-per-56", s.MaxConnsPer56, &c.MaxConnsPer56, true},
		{"max-conns-per-48", s.MaxConnsPer48, &c.MaxConnsPer48, true},
		{"max-members", s.MaxMembers, &c.MaxMembersPerRendezvous, false},
	} {
		v, err := s.count(n.flag, n.val, n.unlimited)
		if err != nil {
			return r, err
		}
		*n.dst = v
	}
	if c.HandshakeRatePerIP, err = s.rate("handshake-rate-per-ip", s.HandshakeRatePerIP); err != nil {
		return r, err
	}
	if c.MaxConnLifetime, err = s.duration("max-conn-lifetime", s.MaxConnLifetime, true); err != nil {
		return r, err
	}
	if c.MaxConnLifetime > 0 && c.MaxConnLifetime < time.Second {
		return r, usageErrorf("%s %v is under a second; clients could not plan for it", s.res.source("max-conn-lifetime"), c.MaxConnLifetime)
	}
	if c.DrainGrace, err = s.duration("drain-grace", s.DrainGrace, false); err != nil {
		return r, err
	}
	return r, nil
}

// count parses a whole number of at least 1, or with unlimited also the
// word "unlimited" or 0, both relayserver.Unlimited.
func (s *relaySettings) count(flagName, v string, unlimited bool) (int, error) {
	v = strings.TrimSpace(v)
	if unlimited && (v == unlimitedWord || v == "0") {
		return relayserver.Unlimited, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		if unlimited {
			return 0, usageErrorf("%s %q: want a whole number of at least 1, or %q", s.res.source(flagName), v, unlimitedWord)
		}
		return 0, usageErrorf("%s %q: want a whole number of at least 1", s.res.source(flagName), v)
	}
	return n, nil
}

// rate parses a positive number per second, or "unlimited" or 0.
func (s *relaySettings) rate(flagName, v string) (float64, error) {
	v = strings.TrimSpace(v)
	if v == unlimitedWord {
		return relayserver.Unlimited, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	switch {
	case err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f):
		return 0, usageErrorf("%s %q: want a number per second, or %q", s.res.source(flagName), v, unlimitedWord)
	case f == 0:
		return relayserver.Unlimited, nil
	}
	return f, nil
}

// duration parses a Go duration (30s, 4m); zeroOK allows 0.
func (s *relaySettings) duration(flagName, v string, zeroOK bool) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "0" && zeroOK {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || (d == 0 && !zeroOK) {
		what := "a positive duration such as 5s"
		if zeroOK {
			what = "a duration such as 30m, or 0"
		}
		return 0, usageErrorf("%s %q: want %s", s.res.source(flagName), v, what)
	}
	return d, nil
}

// logAttrs describes the limits in force for the start-up log line.
func (r relayRun) logAttrs() []any {
	show := func(v float64) any {
		if v == relayserver.Unlimited {
			return unlimitedWord
		}
		return v
	}
	return []any{
		slog.Bool("tls", r.certFile != ""),
		slog.Int("max_conns", r.cfg.MaxConns),
		slog.Int("max_conns_per_key", r.cfg.MaxConnsPerKey),
		slog.Any("rate", show(float64(r.cfg.RateBytesPerSec))),
		slog.Any("max_conns_per_ip", show(float64(r.cfg.MaxConnsPerIP))),
		slog.Any("handshake_rate_per_ip", show(r.cfg.HandshakeRatePerIP)),
		slog.Any("max_conns_per_56", show(float64(r.cfg.MaxConnsPer56))),
		slog.Any("max_conns_per_48", show(float64(r.cfg.MaxConnsPer48))),
		slog.Int("max_members", r.cfg.MaxMembersPerRendezvous),
		slog.Bool("metrics", r.metricsListen != ""),
		slog.Duration("max_conn_lifetime", r.cfg.MaxConnLifetime),
		slog.Bool("trust_proxy_headers", r.cfg.TrustProxyHeaders),
		slog.Bool("backplane", r.cfg.Backplane != ""),
	}
}
