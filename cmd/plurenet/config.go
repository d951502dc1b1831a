package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// upSettings is everything "plurenet up" can be told. Each field is reachable
// three ways, in this order of precedence: a flag, a PLURENET_* environment
// variable, a key of the JSON config file. The file also accepts the PluresDB
// seed's keys (syncTransport, syncRelay, syncRelayFallback, syncKey).
type upSettings struct {
	Topic         string
	TopicHex      string
	Key           string
	KeyFile       string
	Name          string
	Relay         string
	RelayFallback string
	Transport     string
	StateDir      string
	IP            string
	IPv4Prefix    string
	SOCKS5        string
	SOCKS5Auth    string // path of the credentials file
	SOCKS5Remote  bool   // --socks5-allow-remote
	Forward       listValue
	Expose        listValue
	TUN           string
	DNS           string
	DNSSuffix     string
	DNSListen     listValue
	HostsFile     string
	ListenPort    string
	STUN          listValue
	Peers         listValue
	LANDiscovery  string
	DHT           string
	DHTBootstrap  listValue
	PortMapping   string
	CAFile        string
	LogLevel      string
	MetricsListen string
	Open          bool
	Invite        string

	// unknownKeys lists config file keys we do not use. A seed config
	// holds PluresDB's own settings too, so they are reported, not refused.
	unknownKeys []string
}

// setting ties one field to its flag, environment variable and file keys.
// Every value is kept as the text the user gave; each command checks and
// converts its settings after resolving them, naming where a bad value came
// from.
type setting struct {
	flag     string
	env      string
	fileKeys []string // first is ours; others are aliases (the seed's names)
	usage    string
	str      *string    // for single values
	list     *listValue // for repeatable values
	// kind says which JSON types the config file may use for a single
	// value: a string always; kindNumber also a number, kindBool also
	// true or false (and the flag needs no value).
	kind settingKind
}

type settingKind int

const (
	kindString settingKind = iota
	kindNumber
	kindBool
)

func (s *upSettings) table() []setting {
	return []setting{
		{flag: "topic", env: "PLURENET_TOPIC", fileKeys: []string{"topic"}, usage: "mesh topic name (members share it)", str: &s.Topic},
		{flag: "topic-hex", env: "PLURENET_TOPIC_HEX", fileKeys: []string{"topicHex"}, usage: "mesh topic as 64 hex characters (instead of --topic)", str: &s.TopicHex},
		{flag: "key", env: "PLURENET_KEY", fileKeys: []string{"key", "syncKey"}, usage: "mesh secret shared by members (see \"plurenet key generate\"); on the command line other local users can read it: prefer --key-file or the environment", str: &s.Key},
		{flag: "key-file", env: "PLURENET_KEY_FILE", fileKeys: []string{"keyFile"}, usage: "file holding the mesh secret on one line (mode 0600, owned by you)", str: &s.KeyFile},
		{flag: "name", env: "PLURENET_NAME", fileKeys: []string{"name"}, usage: "this node's name in the mesh (default: host name)", str: &s.Name},
		{flag: "relay", env: "PLURENET_RELAY", fileKeys: []string{"relay", "syncRelay"}, usage: "primary relay URL (ws:// or wss://)", str: &s.Relay},
		{flag: "relay-fallback", env: "PLURENET_RELAY_FALLBACK", fileKeys: []string{"relayFallback", "syncRelayFallback"}, usage: "fallback relay URL, used when the primary is unreachable", str: &s.RelayFallback},
		{flag: "transport", env: "PLURENET_TRANSPORT", fileKeys: []string{"transport", "syncTransport"}, usage: "auto, relay or swarm (no relay: LAN discovery and static peers; \"direct\" is its old name)", str: &s.Transport},
		{flag: "peer", env: "PLURENET_PEER", fileKeys: []string{"peers", "peer"}, usage: "static peer for --transport swarm: KEY@HOST:PORT or HOST:PORT, repeatable", list: &s.Peers},
		{flag: "lan-discovery", env: "PLURENET_LAN_DISCOVERY", fileKeys: []string{"lanDiscovery"}, usage: "on or off: find members on the LAN by multicast in --transport swarm (default on)", str: &s.LANDiscovery},
		{flag: "dht", env: "PLURENET_DHT", fileKeys: []string{"dht"}, usage: "on or off: find members across the internet on the Mainline DHT (default on with --transport swarm, off with auto; with auto it keeps members meeting while every relay is down; refused with relay, which sends no UDP)", str: &s.DHT},
		{flag: "dht-bootstrap", env: "PLURENET_DHT_BOOTSTRAP", fileKeys: []string{"dhtBootstrap"}, usage: "HOST:PORT,... of DHT nodes to join through, e.g. a private DHT of \"plurenet dht-node\"s (default: the DHT library's public bootstrap routers)", list: &s.DHTBootstrap},
		{flag: "state-dir", env: "PLURENET_STATE_DIR", fileKeys: []string{"stateDir"}, usage: "directory for the node key and control socket", str: &s.StateDir},
		{flag: "ip", env: "PLURENET_IP", fileKeys: []string{"ip"}, usage: "pin this node's IPv4 overlay address", str: &s.IP},
		{flag: "ipv4-prefix", env: "PLURENET_IPV4_PREFIX", fileKeys: []string{"ipv4Prefix"}, usage: "IPv4 prefix of the mesh (every member must use the same)", str: &s.IPv4Prefix},
		{flag: "socks5", env: "PLURENET_SOCKS5", fileKeys: []string{"socks5"}, usage: "serve a SOCKS5 proxy into the mesh on this loopback address (e.g. 127.0.0.1:1080)", str: &s.SOCKS5},
		{flag: "socks5-auth-file", env: "PLURENET_SOCKS5_AUTH_FILE", fileKeys: []string{"socks5AuthFile"}, usage: "file holding USER:PASSWORD that SOCKS5 clients must give (mode 0600; or env PLURENET_SOCKS5_AUTH)", str: &s.SOCKS5Auth},
		{flag: "forward", env: "PLURENET_FORWARD", fileKeys: []string{"forward"}, usage: "LOCAL=MEMBER:PORT: forward a local port to a member (repeatable)", list: &s.Forward},
		{flag: "expose", env: "PLURENET_EXPOSE", fileKeys: []string{"expose"}, usage: "PORT[=HOST:PORT]: let members reach a local service on this node's overlay IP (repeatable)", list: &s.Expose},
		{flag: "listen-port", env: "PLURENET_LISTEN_PORT", fileKeys: []string{"listenPort"}, usage: "UDP port of the direct path (default: random; 51898 with --transport swarm)", str: &s.ListenPort},
		{flag: "stun", env: "PLURENET_STUN", fileKeys: []string{"stun"}, usage: "STUN server host:port for the direct path, repeatable (default: each relay's host, port 3478; \"none\" for none)", list: &s.STUN},
		{flag: "port-mapping", env: "PLURENET_PORT_MAPPING", fileKeys: []string{"portMapping"}, usage: "on, off, or the protocols to try in order (upnp,nat-pmp,pcp): ask the router to forward the direct path's UDP port (default on with --transport auto)", str: &s.PortMapping},
		{flag: "tun", env: "PLURENET_TUN", fileKeys: []string{"tun"}, usage: "use a kernel TUN device with this name (Linux: needs CAP_NET_ADMIN; macOS: utun or utunN, as root; Windows: Administrator and wintun.dll next to plurenet.exe)", str: &s.TUN},
		{flag: "dns", env: "PLURENET_DNS", fileKeys: []string{"dns"}, usage: "on or off: serve members' names (NAME.SUFFIX) over DNS on the overlay, and with --tun register them with systemd-resolved (default on)", str: &s.DNS},
		{flag: "dns-suffix", env: "PLURENET_DNS_SUFFIX", fileKeys: []string{"dnsSuffix"}, usage: "DNS suffix of members' names (default TOPIC.plurenet, with a hash of the topic when the name is not a DNS label)", str: &s.DNSSuffix},
		{flag: "dns-listen", env: "PLURENET_DNS_LISTEN", fileKeys: []string{"dnsListen"}, usage: "also serve members' names to this host's programs on this loopback ADDR:PORT, UDP and TCP (repeatable)", list: &s.DNSListen},
		{flag: "hosts-file", env: "PLURENET_HOSTS_FILE", fileKeys: []string{"hostsFile"}, usage: "keep members' names in a marked block of this hosts file (e.g. /etc/hosts) while running; removed on exit", str: &s.HostsFile},
		{flag: "ca-file", env: "PLURENET_CA_FILE", fileKeys: []string{"caFile"}, usage: "PEM file of extra root CAs trusted for wss:// relays", str: &s.CAFile},
		{flag: "invite", env: "PLURENET_INVITE", fileKeys: []string{"invite"}, usage: "enrol in an owned mesh with this token from \"plurenet invite\" (once: later starts need only --state-dir)", str: &s.Invite},
		{flag: "metrics-listen", env: "PLURENET_METRICS_LISTEN", fileKeys: []string{"metricsListen"}, usage: "serve Prometheus metrics on GET /metrics at this TCP `address`, e.g. 127.0.0.1:9101 (a port alone means loopback); off by default: they show member keys and traffic", str: &s.MetricsListen},
		{flag: "log-level", env: "PLURENET_LOG_LEVEL", fileKeys: []string{"logLevel"}, usage: "debug, info, warn or error", str: &s.LogLevel},
	}
}

// listValue is a repeatable flag. The environment form separates items with
// commas.
type listValue []string

func (l *listValue) String() string { return strings.Join(*l, ",") }

func (l *listValue) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// registerFlags defines one flag per setting on fs, plus --config.
func (s *upSettings) registerFlags(fs *flag.FlagSet, configPath *string) {
	registerSettings(fs, s.table(), configPath, "PLURENET_CONFIG")
	fs.BoolVar(&s.Open, "open", false, "run without a mesh secret: anyone who knows the topic can join (not recommended)")
	fs.BoolVar(&s.SOCKS5Remote, "socks5-allow-remote", false, "let --socks5 listen on a non-loopback address; needs --socks5-auth-file")
}

// resolve fills s from the config file and the environment, leaving alone
// every setting whose flag was given. getenv is os.Getenv outside tests.
// Keys of the file that no setting uses are kept in s.unknownKeys: a seed
// config holds PluresDB's own settings too.
func (s *upSettings) resolve(fs *flag.FlagSet, configPath string, getenv func(string) string) error {
	res, err := resolveSettings(fs, s.table(), configPath, "PLURENET_CONFIG", getenv)
	if err != nil {
		return err
	}
	s.unknownKeys = res.unknownKeys
	return nil
}

// registerSettings defines one flag per setting on fs, with the setting's
// current value as its default, plus --config (whose environment variable
// is configEnv).
func registerSettings(fs *flag.FlagSet, table []setting, configPath *string, configEnv string) {
	fs.StringVar(configPath, "config", "", "JSON config `file` (env "+configEnv+")")
	for _, st := range table {
		usage := st.usage + " (env " + st.env + ")"
		switch {
		case st.list != nil:
			fs.Var(st.list, st.flag, usage)
		case st.kind == kindBool:
			fs.Var((*boolString)(st.str), st.flag, usage)
		default:
			fs.StringVar(st.str, st.flag, *st.str, usage)
		}
	}
}

// boolString is a boolean flag (given alone it means true) that keeps its
// value as text like every other setting.
type boolString string

func (b *boolString) String() string   { return string(*b) }
func (b *boolString) IsBoolFlag() bool { return true }

func (b *boolString) Set(v string) error {
	if _, err := strconv.ParseBool(v); err != nil {
		return fmt.Errorf("want true or false")
	}
	*b = boolString(v)
	return nil
}

// resolved is what resolveSettings learned besides the values.
type resolved struct {
	// from names where each setting's value came from, by flag name:
	// "--rate", "PLURENET_RELAY_RATE" or `"rate" in relay.json`. Settings
	// left at their default are absent.
	from map[string]string
	// configPath is the config file read, if any.
	configPath string
	// unknownKeys lists config file keys no setting uses, sorted.
	unknownKeys []string
}

// source names where the setting with this flag got its value, for error
// messages.
func (r resolved) source(flagName string) string {
	if f, ok := r.from[flagName]; ok {
		return f
	}
	return "--" + flagName
}

// resolveSettings fills table's values from the config file (configPath, or
// the file named by the configEnv variable) and the environment, leaving
// alone every setting whose flag was given: flags win over the environment,
// the environment over the file.
func resolveSettings(fs *flag.FlagSet, table []setting, configPath, configEnv string, getenv func(string) string) (resolved, error) {
	res := resolved{from: map[string]string{}}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if configPath == "" {
		configPath = getenv(configEnv)
	}
	res.configPath = configPath
	var file map[string]json.RawMessage
	if configPath != "" {
		var err error
		if file, err = readConfigFile(configPath); err != nil {
			return res, err
		}
		if err := checkConfigSecrets(configPath, file); err != nil {
			return res, err
		}
	}
	known := map[string]bool{}
	for _, st := range table {
		for _, k := range st.fileKeys {
			known[k] = true
		}
		// Read the file's value even when a flag or the environment wins,
		// so that a broken file is reported rather than silently ignored.
		fileKey, fileVal, fileList, err := st.fromFile(file, configPath)
		if err != nil {
			return res, err
		}
		switch {
		case given[st.flag]:
			res.from[st.flag] = "--" + st.flag
		case getenv(st.env) != "":
			if st.list != nil {
				*st.list = splitList(getenv(st.env))
			} else {
				*st.str = getenv(st.env)
			}
			res.from[st.flag] = st.env
		case fileKey != "" && st.list != nil:
			*st.list = fileList
			res.from[st.flag] = fmt.Sprintf("%q in %s", fileKey, configPath)
		case fileKey != "":
			*st.str = fileVal
			res.from[st.flag] = fmt.Sprintf("%q in %s", fileKey, configPath)
		}
	}
	for k := range file {
		if !known[k] {
			res.unknownKeys = append(res.unknownKeys, k)
		}
	}
	sort.Strings(res.unknownKeys)
	return res, nil
}

// fromFile returns the setting's value in the config file and the key it
// was found under, or an empty key when it is not there.
func (st setting) fromFile(file map[string]json.RawMessage, path string) (key, val string, list []string, err error) {
	for _, k := range st.fileKeys {
		raw, found := file[k]
		if !found {
			continue
		}
		if st.list != nil {
			if json.Unmarshal(raw, &list) == nil {
				return k, "", list, nil
			}
			var one string
			if json.Unmarshal(raw, &one) != nil {
				return "", "", nil, fmt.Errorf("config file %s: key %q: want a string or a list of strings", path, k)
			}
			return k, "", []string{one}, nil
		}
		if json.Unmarshal(raw, &val) == nil {
			return k, val, nil, nil
		}
		var num json.Number
		var b bool
		switch {
		case st.kind == kindNumber && json.Unmarshal(raw, &num) == nil:
			return k, num.String(), nil, nil
		case st.kind == kindBool && json.Unmarshal(raw, &b) == nil:
			return k, strconv.FormatBool(b), nil, nil
		case st.kind == kindNumber:
			return "", "", nil, fmt.Errorf("config file %s: key %q: want a number or a string", path, k)
		case st.kind == kindBool:
			return "", "", nil, fmt.Errorf("config file %s: key %q: want true or false", path, k)
		}
		return "", "", nil, fmt.Errorf("config file %s: key %q: want a string", path, k)
	}
	return "", "", nil, nil
}

// maxConfigFile bounds what we read: a config is a few hundred bytes, and a
// wrong path (a disk image, /dev/zero) must fail fast rather than fill memory.
const maxConfigFile = 1 << 20

func readConfigFile(path string) (map[string]json.RawMessage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	buf, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	if len(buf) > maxConfigFile {
		return nil, fmt.Errorf("config file %s: larger than %d bytes; is this the right file?", path, maxConfigFile)
	}
	dec := json.NewDecoder(bytes.NewReader(buf))
	var m map[string]json.RawMessage
	if err := dec.Decode(&m); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("config file %s: not valid JSON at byte %d: %v", path, se.Offset, err)
		}
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("config file %s: not valid JSON: it ends too early", path)
		}
		return nil, fmt.Errorf("config file %s: want a JSON object: %v", path, err)
	}
	return m, nil
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// defaultStateDir follows the XDG base directory spec for users and the FHS
// for root, so that a node keeps its key (and so its IPs) across restarts.
func defaultStateDir(getenv func(string) string) string {
	if os.Geteuid() == 0 {
		return "/var/lib/plurenet"
	}
	if d := getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "plurenet")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "plurenet")
	}
	return ".plurenet"
}
