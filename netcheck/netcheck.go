package netcheck

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/plures/plurenet/portmap"
	"github.com/plures/plurenet/transports/relay"
)

// DefaultTimeout bounds each check: STUN servers and relays that have not
// answered in 3 s count as not answering (a working one answers in
// milliseconds to a few hundred).
const DefaultTimeout = 3 * time.Second

// Config says what to check. The zero value checks port mapping and IPv6
// and nothing else.
type Config struct {
	// STUNServers are "host:port" STUN servers; two or more (on different
	// hosts) tell the NAT's mapping behaviour.
	STUNServers []string
	// Relays are relay URLs to time.
	Relays []string
	// TLSConfig and Proxy are used to reach the relays, as by a node.
	TLSConfig *tls.Config
	Proxy     func(*http.Request) (*url.URL, error)
	// NoPortMapping skips asking the gateway for port-mapping protocols.
	NoPortMapping bool
	// PortMapping says which gateway and protocols to ask (its Port is
	// not used); the zero value asks the default gateway for every
	// protocol.
	PortMapping portmap.Config
	// Timeout bounds each check; zero means DefaultTimeout. The checks
	// run at once, so Run takes about this long (UPnP's search a little
	// longer).
	Timeout time.Duration
	Logger  *slog.Logger
}

// Run checks the network and returns what it found, with a verdict. Its
// only errors are ctx's; whatever fails along the way is in the report.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := Report{Version: ReportVersion, Time: time.Now().UTC(), STUN: []STUNResult{}, Relays: []RelayResult{}}
	r.IPv6.Global = []string{}
	own := ownAddrs()
	for a := range own {
		if isGlobal6(a) {
			r.IPv6.Global = append(r.IPv6.Global, a.String())
		}
	}
	slices.Sort(r.IPv6.Global)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.STUN, r.Local = checkSTUN(ctx, "udp4", cfg)
	}()
	go func() {
		defer wg.Done()
		r.IPv6.STUN, _ = checkSTUN(ctx, "udp6", cfg)
	}()
	if !cfg.NoPortMapping {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.PortMapping = checkPortMapping(ctx, cfg)
		}()
	}
	r.Relays = make([]RelayResult, len(cfg.Relays))
	for i, u := range cfg.Relays {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Relays[i] = RelayResult{URL: u}
			took, err := relay.Probe(ctx, relay.ProbeConfig{URL: u, TLSConfig: cfg.TLSConfig, Proxy: cfg.Proxy, Timeout: cfg.Timeout})
			if err != nil {
				r.Relays[i].Error = err.Error()
				return
			}
			r.Relays[i].HandshakeMs = float64(took.Microseconds()) / 1000
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return r, err
	}
	for _, s := range r.STUN {
		r.UDP = r.UDP || s.Mapped != ""
	}
	for _, s := range r.IPv6.STUN {
		r.IPv6.UDP = r.IPv6.UDP || s.Mapped != ""
	}
	r.Mapping = classifyMapping(r.STUN, own)
	r.judge()
	return r, nil
}

// checkSTUN asks every STUN server with an address of network's family.
// For IPv4 every configured server gets a result; for IPv6 only those with
// an IPv6 address.
func checkSTUN(ctx context.Context, network string, cfg Config) ([]STUNResult, string) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	targets, failed := resolveSTUN(ctx, network, cfg.STUNServers)
	results, local, err := stunAll(ctx, network, targets)
	if err != nil {
		for i := range results {
			results[i].Error = err.Error()
		}
	}
	out := append(results, failed...)
	if out == nil {
		out = []STUNResult{}
	}
	l := ""
	if local.IsValid() {
		l = local.String()
	}
	return out, l
}

// checkPortMapping asks the gateway which port-mapping protocols it speaks.
func checkPortMapping(ctx context.Context, cfg Config) *PortMappingReport {
	rep := &PortMappingReport{}
	gw, results, err := portmap.Probe(ctx, cfg.PortMapping)
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	rep.Gateway = gw.Addr.String()
	for _, res := range results {
		pr := ProtocolResult{Protocol: string(res.Protocol), Available: res.Err == nil}
		if res.Err != nil {
			pr.Error = res.Err.Error()
		} else if res.External.IsValid() {
			pr.External = res.External.String()
		}
		rep.Protocols = append(rep.Protocols, pr)
	}
	return rep
}

// ownAddrs returns this host's interface addresses.
func ownAddrs() map[netip.Addr]bool {
	own := map[netip.Addr]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return own
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				own[ip.Unmap()] = true
			}
		}
	}
	return own
}

// isGlobal6 reports whether a is an IPv6 address that reaches beyond the
// site: global unicast, not unique-local (fc00::/7).
func isGlobal6(a netip.Addr) bool {
	return a.Is6() && !a.Is4In6() && a.IsGlobalUnicast() && !a.IsPrivate()
}
