package portmap

import (
	"context"
	"net/netip"
	"sync"
)

// ProbeResult says whether the gateway answered one protocol.
type ProbeResult struct {
	Protocol Protocol
	// External is the gateway's external address as the protocol reports
	// it (PCP's probe reports none).
	External netip.Addr
	// Err is why the protocol is not available; nil when it answered.
	Err error
}

// Probe asks the gateway (cfg.Gateway, or the default route's) which of
// cfg.Protocols it speaks, all at once, without mapping anything. Only
// cfg.Gateway, cfg.Protocols and the test hooks are used. The error is
// about finding the gateway; each protocol's failure is in its result.
func Probe(ctx context.Context, cfg Config) (Gateway, []ProbeResult, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Gateway{}, nil, err
	}
	m := Mapper{cfg: cfg}
	gw, err := m.gateway()
	if err != nil {
		return Gateway{}, nil, err
	}
	results, _ := probeAll(ctx, gw, cfg.Protocols, cfg.hooks)
	return gw, results, nil
}

// probeAll probes every protocol concurrently, each bounded by
// exchangeTimeout (UPnP by two: search, then description and action), and
// returns the results in the order of protocols with the clients that
// produced them.
func probeAll(ctx context.Context, gw Gateway, protocols []Protocol, hooks testHooks) ([]ProbeResult, []client) {
	results := make([]ProbeResult, len(protocols))
	clients := make([]client, len(protocols))
	var wg sync.WaitGroup
	for i, p := range protocols {
		results[i].Protocol = p
		c, err := newClient(p, gw, hooks)
		if err != nil {
			results[i].Err = err
			continue
		}
		clients[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			timeout := exchangeTimeout
			if p == UPnP {
				timeout *= 2
			}
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			results[i].External, results[i].Err = c.probe(pctx)
		}()
	}
	wg.Wait()
	return results, clients
}
