package portmap

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testWait bounds what the tests wait for; a working run takes
// milliseconds to a few seconds (one renewal).
const testWait = 20 * time.Second

// TestProbe: Probe reports exactly the protocols the gateway speaks, with
// its external address where the protocol gives one, and maps nothing.
func TestProbe(t *testing.T) {
	tests := []struct {
		name string
		fc   fakeConfig
		want map[Protocol]bool
	}{
		{"all", fakeConfig{pmp: true, pcp: true, upnp: true}, map[Protocol]bool{UPnP: true, NATPMP: true, PCP: true}},
		{"nat-pmp only", fakeConfig{pmp: true}, map[Protocol]bool{NATPMP: true}},
		{"pcp only", fakeConfig{pcp: true}, map[Protocol]bool{PCP: true}},
		{"upnp only", fakeConfig{upnp: true}, map[Protocol]bool{UPnP: true}},
		{"none", fakeConfig{}, map[Protocol]bool{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := newFakeGateway(t, tt.fc)
			ctx, cancel := context.WithTimeout(context.Background(), testWait)
			defer cancel()
			gw, results, err := Probe(ctx, g.config(0))
			if err != nil {
				t.Fatal(err)
			}
			if gw.Addr != g.addr {
				t.Errorf("gateway %s, want %s", gw.Addr, g.addr)
			}
			if len(results) != len(Protocols) {
				t.Fatalf("%d results, want one per protocol", len(results))
			}
			for i, r := range results {
				if r.Protocol != Protocols[i] {
					t.Errorf("result %d is %s, want %s (preference order)", i, r.Protocol, Protocols[i])
				}
				if got := r.Err == nil; got != tt.want[r.Protocol] {
					t.Errorf("%s available = %v (err %v), want %v", r.Protocol, got, r.Err, tt.want[r.Protocol])
				}
				if r.Err == nil && r.Protocol != PCP && r.External != g.ext {
					t.Errorf("%s external address %s, want %s", r.Protocol, r.External, g.ext)
				}
			}
			if adds, _, live := g.counts(); len(adds) != 0 || len(live) != 0 {
				t.Errorf("probe mapped something: adds %v, live %v", adds, live)
			}
		})
	}
}

// changes records OnChange calls.
type changes struct {
	mu  sync.Mutex
	got []Mapping
	c   chan struct{}
}

func newChanges() *changes { return &changes{c: make(chan struct{}, 16)} }

func (c *changes) on(m Mapping) {
	c.mu.Lock()
	c.got = append(c.got, m)
	c.mu.Unlock()
	select {
	case c.c <- struct{}{}:
	default:
	}
}

// next waits for a call after the first n and returns it.
func (c *changes) wait(t *testing.T, n int) Mapping {
	t.Helper()
	deadline := time.After(testWait)
	for {
		c.mu.Lock()
		if len(c.got) > n {
			m := c.got[n]
			c.mu.Unlock()
			return m
		}
		c.mu.Unlock()
		select {
		case <-c.c:
		case <-deadline:
			t.Fatalf("no mapping change number %d within %v", n+1, testWait)
		}
	}
}

// TestMapperPreference: the Mapper maps with the most preferred protocol
// the gateway speaks, reports the mapping, and removes it on Close.
func TestMapperPreference(t *testing.T) {
	tests := []struct {
		name string
		fc   fakeConfig
		want Protocol
	}{
		{"all", fakeConfig{pmp: true, pcp: true, upnp: true}, UPnP},
		{"nat-pmp and pcp", fakeConfig{pmp: true, pcp: true}, NATPMP},
		{"pcp only", fakeConfig{pcp: true}, PCP},
		{"upnp only", fakeConfig{upnp: true}, UPnP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := newFakeGateway(t, tt.fc)
			ch := newChanges()
			cfg := g.config(40000)
			cfg.OnChange = ch.on
			m, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			got := ch.wait(t, 0)
			want := netip.AddrPortFrom(g.ext, 40000)
			if got.Protocol != tt.want || got.External != want || got.Internal != netip.MustParseAddrPort("127.0.0.1:40000") {
				t.Fatalf("mapping %+v; want %s %s -> 127.0.0.1:40000", got, tt.want, want)
			}
			if cur, ok := m.Mapping(); !ok || cur.External != want {
				t.Errorf("Mapping() = %+v, %v", cur, ok)
			}
			if _, _, live := g.counts(); live[40000] != 40000 || len(live) != 1 {
				t.Errorf("gateway's mappings %v; want only 40000 -> 40000", live)
			}
			m.Close()
			adds, removes, live := g.counts()
			if len(live) != 0 || removes[tt.want] != 1 {
				t.Errorf("after Close: gateway's mappings %v, removes %v; want none left, one %s removal", live, removes, tt.want)
			}
			for p := range adds {
				if p != tt.want {
					t.Errorf("mapped with %s as well as %s", p, tt.want)
				}
			}
			if last := ch.wait(t, 1); last.IsValid() {
				t.Errorf("last change %+v; want the zero Mapping on Close", last)
			}
			if _, ok := m.Mapping(); ok {
				t.Error("Mapping() still reports a mapping after Close")
			}
		})
	}
}

// TestMapperRenews: a mapping granted for 2 s is renewed before it
// lapses, again and again, with the same external port.
func TestMapperRenews(t *testing.T) {
	for _, p := range []Protocol{UPnP, NATPMP, PCP} {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			g := newFakeGateway(t, fakeConfig{pmp: true, pcp: true, upnp: true, grant: 2})
			cfg := g.config(40001)
			cfg.Protocols = []Protocol{p}
			cfg.Lifetime = minLifetime
			m, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			ctx, cancel := context.WithTimeout(context.Background(), testWait)
			defer cancel()
			for {
				if adds, _, _ := g.counts(); adds[p] >= 3 {
					break
				}
				if !g.waitChange(ctx) {
					adds, _, _ := g.counts()
					t.Fatalf("%d adds within %v; want the first and two renewals", adds[p], testWait)
				}
			}
			mp, ok := m.Mapping()
			if !ok || mp.External != netip.AddrPortFrom(g.ext, 40001) || mp.Lifetime != 2*time.Second {
				t.Errorf("after renewals: %+v, %v", mp, ok)
			}
		})
	}
}

// TestMapperLost: when the gateway stops answering, the mapping is
// withdrawn once its lifetime has passed, and Close still returns.
func TestMapperLost(t *testing.T) {
	g := newFakeGateway(t, fakeConfig{pmp: true, grant: 2})
	ch := newChanges()
	cfg := g.config(40002)
	cfg.Lifetime = minLifetime
	cfg.OnChange = ch.on
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if mp := ch.wait(t, 0); mp.Protocol != NATPMP {
		t.Fatalf("first mapping %+v", mp)
	}
	g.mu.Lock()
	g.pmp = false // the gateway goes silent
	g.mu.Unlock()
	if mp := ch.wait(t, 1); mp.IsValid() {
		t.Fatalf("after the gateway went silent: %+v; want the mapping withdrawn", mp)
	}
	if _, ok := m.Mapping(); ok {
		t.Error("Mapping() still reports the lost mapping")
	}
}

// TestNoGatewayAnswer: a gateway that speaks nothing gets no mapping, and
// Close returns while the Mapper waits to search again.
func TestNoGatewayAnswer(t *testing.T) {
	g := newFakeGateway(t, fakeConfig{})
	m, err := New(g.config(40003))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	_, results, err := Probe(ctx, g.config(0))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Err == nil {
			t.Errorf("%s answered", r.Protocol)
		}
	}
	if _, ok := m.Mapping(); ok {
		t.Error("a mapping from a gateway that speaks nothing")
	}
	m.Close()
	m.Close() // idempotent
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no port", Config{}},
		{"unknown protocol", Config{Port: 1, Protocols: []Protocol{"igd"}}},
		{"twice", Config{Port: 1, Protocols: []Protocol{PCP, PCP}}},
		{"short lifetime", Config{Port: 1, Lifetime: time.Second}},
		{"ipv6 gateway", Config{Port: 1, Gateway: netip.MustParseAddr("fe80::1")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if m, err := New(tt.cfg); err == nil {
				m.Close()
				t.Fatalf("New(%+v) succeeded", tt.cfg)
			}
		})
	}
}
