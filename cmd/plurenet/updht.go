package main

import (
	"strings"

	"github.com/plures/plurenet/discovery/dht"
	"github.com/plures/plurenet/overlay"
)

// dhtConfig checks --dht and --dht-bootstrap for --transport swarm: the
// DHT is on unless --dht off.
func (s *upSettings) dhtConfig(cfg *overlay.Config) error {
	switch s.DHT {
	case "", "on":
		cfg.DHT = true
	case "off":
	default:
		return usageErrorf("--dht %q: want on or off", s.DHT)
	}
	var boot []string
	for _, item := range s.DHTBootstrap {
		for _, hp := range strings.Split(item, ",") {
			if hp = strings.TrimSpace(hp); hp != "" {
				boot = append(boot, hp)
			}
		}
	}
	if len(boot) > 0 && !cfg.DHT {
		return usageErrorf("--dht-bootstrap with --dht off: turn the DHT on or drop the bootstrap nodes")
	}
	if err := dht.CheckBootstrap(boot); err != nil {
		return usageErrorf("--dht-bootstrap: %v", err)
	}
	if len(boot) > 0 {
		cfg.DHTBootstrap = boot
	}
	return nil
}
