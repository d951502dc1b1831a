package main

import (
	"strings"

	"github.com/plures/plurenet/discovery/dht"
	"github.com/plures/plurenet/overlay"
)

// dhtConfig checks --dht and --dht-bootstrap: the DHT is on with --dht
// on, off with --dht off, and else as defaultOn says (on in swarm mode,
// off with relays).
func (s *upSettings) dhtConfig(cfg *overlay.Config, defaultOn bool) error {
	switch s.DHT {
	case "":
		cfg.DHT = defaultOn
	case "on":
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
		return usageErrorf("--dht-bootstrap with the DHT off (--dht off, the default with relays): turn it on with --dht on, or drop the bootstrap nodes")
	}
	if err := dht.CheckBootstrap(boot); err != nil {
		return usageErrorf("--dht-bootstrap: %v", err)
	}
	if len(boot) > 0 {
		cfg.DHTBootstrap = boot
	}
	return nil
}
