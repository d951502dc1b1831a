package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/plures/plurenet/discovery/static"
	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/overlay"
	"github.com/plures/plurenet/portmap"
	"github.com/plures/plurenet/proxy/portfwd"
	"github.com/plures/plurenet/transports/relay"
)

func init() {
	register(command{name: "up", summary: "join a mesh and stay in it until interrupted", run: runUp})
}

// nodeMemoryLimit is the node's soft memory limit (runtime/debug), unless
// GOMEMLIMIT sets another. Under load a node's live heap is mostly
// wireguard-go's 64 KiB packet buffers, 35-45 MiB at most with the Bind's
// in-flight bounds (transports/inflight.go); with the GC's default goal of
// twice that, a kernel TUN receiver's RSS reached 76-101 MiB in the lab.
// With this limit the GC collects sooner near it (the buffers hold no
// pointers, so a collection is cheap). The peak RSS sits a few MiB above
// the limit (stacks, runtime): at 60 MiB a kernel TUN receiver peaked at
// 61-64 MiB, at 56 MiB at 58-61 MiB with the same throughput in
// interleaved lab runs. 48 MiB made the GC run nearly continuously and
// halved the direct path's throughput.
const nodeMemoryLimit = 56 << 20

// setNodeMemoryLimit sets nodeMemoryLimit unless the environment has
// GOMEMLIMIT (which the runtime has applied already).
func setNodeMemoryLimit(getenv func(string) string) {
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(nodeMemoryLimit)
	}
}

func runUp(ctx context.Context, args []string, stdout io.Writer) error {
	var s upSettings
	var configPath string
	fs := newFlagSet("up")
	s.registerFlags(fs, &configPath)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := s.resolve(fs, configPath, getenv); err != nil {
		return err
	}
	log, err := newLogger(os.Stderr, s.LogLevel)
	if err != nil {
		return err
	}
	setNodeMemoryLimit(getenv)
	if len(s.unknownKeys) > 0 {
		log.Info("config file keys not used by plurenet", "keys", s.unknownKeys)
	}
	if flagGiven(fs, "key") {
		warnSecretOnCommandLine(log, "key", "--key-file FILE (chmod 600) or PLURENET_KEY")
	}
	if flagGiven(fs, "invite") {
		warnSecretOnCommandLine(log, "invite", "PLURENET_INVITE (the token holds the mesh secret; after enrolling, later starts need no token)")
	}
	owned, relays, err := s.applyEnrolment(log)
	if err != nil {
		return err
	}
	cfg, err := s.nodeConfig(log)
	if err != nil {
		return err
	}
	cfg.Owned = owned
	if relays != nil && s.RelayFallback == "" {
		cfg.Relays = relays // every relay of the invite
	}
	forwards, exposes, err := s.portSpecs()
	if err != nil {
		return err
	}
	socksLn, socksCreds, err := s.listenSOCKS5()
	if err != nil {
		return err
	}
	if socksLn != nil {
		defer socksLn.Close() // if the node fails to start; Serve closes it otherwise
	}
	var metricsLn net.Listener
	if s.MetricsListen != "" {
		if metricsLn, err = listenNodeMetrics(s.MetricsListen, log); err != nil {
			return err
		}
		defer metricsLn.Close() // if the node fails to start; ServeMetrics closes it otherwise
	}
	node, err := overlay.New(cfg)
	if err != nil {
		return err
	}
	defer node.Close()
	v4, v6 := node.Addrs()
	fmt.Fprintf(stdout, "plurenet: %s is up: IPv4 %s, IPv6 %s (status: plurenet status --state-dir %s)\n", cfg.Name, v4, v6, cfg.StateDir)
	printDNS(stdout, "plurenet: ", node.Status().DNS)

	// Every listener below is served until ctx ends; the first failure
	// stops the node, so a half-working node never looks healthy.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	serve := func(what string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && ctx.Err() == nil {
				cancel(fmt.Errorf("%s: %w", what, err))
			}
		}()
	}
	// "plurenet down" asks through the control socket: stop as on SIGTERM.
	serve("stop request", func() error {
		select {
		case <-node.StopRequested():
			fmt.Fprintln(stdout, "plurenet: stop requested through the control socket")
			cancel(nil)
		case <-ctx.Done():
		}
		return nil
	})
	if metricsLn != nil {
		fmt.Fprintf(stdout, "plurenet: metrics on http://%s/metrics\n", metricsLn.Addr())
		serve("metrics on "+s.MetricsListen, func() error { return node.ServeMetrics(ctx, metricsLn) })
	}
	if socksLn != nil {
		srv := newSOCKS5Server(node, socksCreds, log)
		auth := "no authentication: every user of this host may use it"
		if socksCreds != nil {
			auth = "username and password required"
		}
		fmt.Fprintf(stdout, "plurenet: SOCKS5 proxy into the mesh on %s (%s)\n", socksLn.Addr(), auth)
		serve("SOCKS5 on "+s.SOCKS5, func() error { return srv.Serve(ctx, socksLn) })
	}
	for _, f := range forwards {
		ln, err := net.Listen("tcp", f.Listen)
		if err != nil {
			return fmt.Errorf("forward %s: %w", f.Listen, err)
		}
		target := f.TargetAddr()
		fmt.Fprintf(stdout, "plurenet: forwarding %s to %s over the mesh\n", ln.Addr(), target)
		serve("forward "+f.Listen, func() error {
			return portfwd.Forward(ctx, ln, func(ctx context.Context) (net.Conn, error) {
				return node.Dial(ctx, "tcp", target)
			}, log)
		})
	}
	for _, e := range exposes {
		ln, err := node.Listen("tcp", fmt.Sprintf(":%d", e.Port))
		if err != nil {
			return fmt.Errorf("expose %d: %w", e.Port, err)
		}
		local := e.Local
		fmt.Fprintf(stdout, "plurenet: members reach %s at %s:%d\n", local, v4, e.Port)
		serve(fmt.Sprintf("expose %d", e.Port), func() error {
			return portfwd.Forward(ctx, ln, func(ctx context.Context) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", local)
			}, log)
		})
	}
	defer systemdReady(log, fmt.Sprintf("up: IPv4 %s, IPv6 %s", v4, v6))() // Type=notify units: ready now, stopping on return
	<-ctx.Done()
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	fmt.Fprintln(stdout, "plurenet: leaving the mesh")
	return nil
}

// minSecretLen is the shortest mesh secret accepted. Everything a member
// can do rests on the secret, and a short one falls to an offline guess
// from one captured announcement; 16 characters of a generated secret carry
// ~96 bits.
const minSecretLen = 16

// nodeConfig checks the settings and turns them into an overlay.Config.
func (s *upSettings) nodeConfig(log *slog.Logger) (overlay.Config, error) {
	if s.KeyFile != "" {
		if s.Key != "" {
			return overlay.Config{}, usageErrorf("the mesh secret is given twice: --key-file and --key (or PLURENET_KEY, or the config file's key): give one")
		}
		k, err := readSecretFile("key-file", s.KeyFile)
		if err != nil {
			return overlay.Config{}, err
		}
		s.Key = k
	}
	cfg := overlay.Config{Name: s.Name, Secret: s.Key, Logger: log}
	switch {
	case s.Key == "" && !s.Open:
		return cfg, usageErrorf("no mesh secret: give --key-file FILE or set PLURENET_KEY (make one with \"plurenet key generate\"), or --open for a mesh anyone who knows the topic can join")
	case s.Key != "" && s.Open:
		return cfg, usageErrorf("give a mesh secret or --open, not both")
	case s.Key != "" && len(s.Key) < minSecretLen:
		return cfg, usageErrorf("the mesh secret is %d characters: use at least %d (\"plurenet key generate\" makes a strong one)", len(s.Key), minSecretLen)
	}
	if _, _, err := mesh.ClassifySecret(s.Key); err != nil {
		return cfg, usageErrorf("--key: %v", err)
	}
	switch {
	case s.Topic != "" && s.TopicHex != "":
		return cfg, usageErrorf("give --topic or --topic-hex, not both")
	case s.Topic != "":
		cfg.Topic = s.Topic
	case s.TopicHex != "":
		id, err := mesh.ParseTopicHex(s.TopicHex)
		if err != nil {
			return cfg, usageErrorf("--topic-hex: %v", err)
		}
		cfg.TopicID = id
	default:
		return cfg, usageErrorf("no topic: give --topic NAME (every member uses the same)")
	}
	mode, renamed, err := overlay.ParseTransport(s.Transport)
	if err != nil {
		return cfg, usageErrorf("--transport %q: want auto, relay or swarm", s.Transport)
	}
	if renamed {
		log.Warn(overlay.SwarmRenamedNotice)
	}
	cfg.Transport = mode
	cfg.TUN = s.TUN
	if cfg.Transport == overlay.TransportSwarm {
		if err := s.swarmConfig(&cfg); err != nil {
			return cfg, err
		}
	} else {
		if len(s.Peers) > 0 || s.LANDiscovery != "" {
			return cfg, usageErrorf("--peer and --lan-discovery are for --transport swarm (no relay); with a relay, members find each other through it")
		}
		if err := s.dhtConfig(&cfg, false); err != nil {
			return cfg, err
		}
		if cfg.DHT && cfg.Transport == overlay.TransportRelay {
			return cfg, usageErrorf("--dht on with --transport relay: relay mode sends no UDP at all and the DHT needs it; use --transport auto (relays and direct paths) or swarm")
		}
		if s.Relay == "" {
			return cfg, usageErrorf("no relay: give --relay ws://HOST:PORT or wss://HOST (see README, \"Run a relay\"), or use --transport swarm on a LAN")
		}
		relays, err := s.relayURLs()
		if err != nil {
			return cfg, err
		}
		cfg.Relays = relays
	}
	if err := s.portMapping(&cfg); err != nil {
		return cfg, err
	}
	cfg.StateDir = pick(s.StateDir, defaultStateDir(getenv))
	if s.ListenPort != "" {
		p, err := strconv.ParseUint(s.ListenPort, 10, 16)
		if err != nil {
			return cfg, usageErrorf("--listen-port %q: want a UDP port, 0 to 65535", s.ListenPort)
		}
		cfg.ListenPort = int(p)
	}
	switch {
	case len(s.STUN) == 1 && s.STUN[0] == "none":
		cfg.STUNServers = []string{}
	case len(s.STUN) > 0:
		for _, hp := range s.STUN {
			if _, _, err := net.SplitHostPort(hp); err != nil {
				return cfg, usageErrorf("--stun %q: want host:port", hp)
			}
		}
		cfg.STUNServers = s.STUN
	}
	if s.IP != "" {
		ip, err := netip.ParseAddr(s.IP)
		if err != nil || !ip.Is4() {
			return cfg, usageErrorf("--ip %q: want an IPv4 address inside the mesh prefix", s.IP)
		}
		cfg.PinnedV4 = ip
	}
	if s.IPv4Prefix != "" {
		p, err := netip.ParsePrefix(s.IPv4Prefix)
		if err != nil {
			return cfg, usageErrorf("--ipv4-prefix %q: want a prefix like 100.64.0.0/10", s.IPv4Prefix)
		}
		cfg.V4Prefix = p.Masked()
	}
	if err := s.dnsConfig(&cfg); err != nil {
		return cfg, err
	}
	tlsConf, err := s.tlsConfig()
	cfg.TLSConfig = tlsConf
	return cfg, err
}

// tlsConfig returns the TLS settings for wss:// relays: nil (the system's
// roots) unless --ca-file adds roots.
func (s *upSettings) tlsConfig() (*tls.Config, error) {
	if s.CAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", s.CAFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// swarmConfig checks the settings of --transport swarm.
func (s *upSettings) swarmConfig(cfg *overlay.Config) error {
	if s.Relay != "" || s.RelayFallback != "" {
		return usageErrorf("--transport swarm uses no relay: drop --relay/--relay-fallback, or use --transport auto for relays and direct paths")
	}
	if len(s.STUN) > 0 {
		return usageErrorf("--transport swarm uses no STUN server: drop --stun")
	}
	for _, p := range s.Peers {
		if _, err := static.ParsePeer(p); err != nil {
			return usageErrorf("--peer: %v", err)
		}
	}
	cfg.Peers = s.Peers
	if err := s.dhtConfig(cfg, true); err != nil {
		return err
	}
	switch s.LANDiscovery {
	case "", "on":
	case "off":
		cfg.NoLAN = true
	default:
		return usageErrorf("--lan-discovery %q: want on or off", s.LANDiscovery)
	}
	return nil
}

func (s *upSettings) portSpecs() ([]portfwd.ForwardSpec, []portfwd.ExposeSpec, error) {
	var fw []portfwd.ForwardSpec
	for _, spec := range s.Forward {
		f, err := portfwd.ParseForward(spec)
		if err != nil {
			return nil, nil, usageErrorf("--forward: %v", err)
		}
		fw = append(fw, f)
	}
	var ex []portfwd.ExposeSpec
	for _, spec := range s.Expose {
		e, err := portfwd.ParseExpose(spec)
		if err != nil {
			return nil, nil, usageErrorf("--expose: %v", err)
		}
		ex = append(ex, e)
	}
	return fw, ex, nil
}

// portMapping checks --port-mapping: on (the default in auto mode), off, or
// a comma-separated list of protocols to try in that order.
func (s *upSettings) portMapping(cfg *overlay.Config) error {
	auto := cfg.Transport == "" || cfg.Transport == overlay.TransportAuto
	switch s.PortMapping {
	case "":
		cfg.NoPortMapping = !auto
		return nil
	case "off":
		cfg.NoPortMapping = true
		return nil
	case "on":
	default:
		for _, p := range strings.Split(s.PortMapping, ",") {
			p := portmap.Protocol(strings.TrimSpace(p))
			if !slices.Contains(portmap.Protocols, p) || slices.Contains(cfg.PortMappingProtocols, p) {
				return usageErrorf("--port-mapping %q: want on, off, or protocols from %q, each once", s.PortMapping, portmap.Protocols)
			}
			cfg.PortMappingProtocols = append(cfg.PortMappingProtocols, p)
		}
	}
	if !auto {
		return usageErrorf("--port-mapping %s is for --transport auto: relay sends no UDP at all, and the mode without a relay runs no ICE to offer the mapped address to", s.PortMapping)
	}
	return nil
}

// relayURLs returns the relay and the fallback relay, normalized, primary
// first; neither is required.
func (s *upSettings) relayURLs() ([]string, error) {
	var out []string
	for _, r := range []struct{ flag, url string }{{"--relay", s.Relay}, {"--relay-fallback", s.RelayFallback}} {
		if r.url == "" {
			continue
		}
		u, err := relay.ParseURL(r.url)
		if err != nil {
			return nil, usageErrorf("%s: %v", r.flag, err)
		}
		out = append(out, u.String())
	}
	return out, nil
}
