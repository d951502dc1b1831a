package overlay

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/plures/plurenet/internal/testkit"
)

// serveNodeMetrics serves n's metrics on a loopback port until the test
// ends and returns their URL.
func serveNodeMetrics(t *testing.T, n *Node) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.ServeMetrics(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeMetrics: %v", err)
		}
	})
	return "http://" + ln.Addr().String() + "/metrics"
}

// scrape fetches and parses the metrics at url.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("metrics do not parse as Prometheus text: %v", err)
	}
	return fams
}

// metricValue returns the value of the series of family name whose labels
// include want, and whether there is one.
func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// TestNodeMetricsMoveWithTraffic scrapes a node's metrics twice while a
// TCP stream flows to another member over the relay: the per-member byte
// and packet counters grow between the scrapes, and the path, handshake
// and relay state describe the mesh as it is.
func TestNodeMetricsMoveWithTraffic(t *testing.T) {
	r := startRelay(t, "")
	a := startNode(t, "alpha", []string{r.URL}, nodeOpts{})
	b := startNode(t, "beta", []string{r.URL}, nodeOpts{})
	url := serveNodeMetrics(t, a)
	c, s := tcpPair(t, a, b, 7100)
	go func() { _, _ = io.Copy(io.Discard, s) }()

	beta := map[string]string{"member": b.PublicKey().String(), "name": "beta"}
	chunk := testkit.RandomData(t, 64<<10)
	send := func() {
		t.Helper()
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	counters := []string{
		"plurenet_node_member_sent_bytes_total",
		"plurenet_node_member_received_bytes_total", // TCP acknowledgements
		"plurenet_node_member_sent_packets_total",
	}
	read := func(fams map[string]*dto.MetricFamily) map[string]float64 {
		t.Helper()
		out := map[string]float64{}
		for _, name := range counters {
			v, ok := metricValue(fams, name, beta)
			if !ok {
				t.Fatalf("no %s for beta", name)
			}
			out[name] = v
		}
		return out
	}

	send()
	testkit.Eventually(t, "a handshake with beta in the metrics", func() bool {
		_, ok := metricValue(scrape(t, url), "plurenet_node_member_handshake_age_seconds", beta)
		return ok
	})
	first := scrape(t, url)
	before := read(first)
	for i := 0; i < 16; i++ {
		send()
	}
	testkit.Eventually(t, "every per-member counter to grow", func() bool {
		after := read(scrape(t, url))
		for _, name := range counters {
			if after[name] <= before[name] {
				return false
			}
		}
		return true
	})

	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"plurenet_node_info", map[string]string{"name": "alpha", "public_key": a.PublicKey().String(), "transport": TransportRelay}, 1},
		{"plurenet_node_members", nil, 1},
		{"plurenet_node_member_info", map[string]string{"member": beta["member"], "path": "relay:primary"}, 1},
		{"plurenet_node_member_path_changes_total", beta, 1},
		{"plurenet_node_relay_connected", map[string]string{"relay": a.Status().Relays[0].URL, "role": "primary"}, 1},
		{"plurenet_node_relay_reconnects_total", map[string]string{"role": "primary"}, 0},
		{"plurenet_node_drops_total", map[string]string{"reason": dropNoPath}, 0},
	} {
		if got, ok := metricValue(first, tc.name, tc.labels); !ok || got != tc.want {
			t.Errorf("%s%v = %v (present %v), want %v", tc.name, tc.labels, got, ok, tc.want)
		}
	}
	// The relay path runs no direct transport, so no direct state.
	if _, ok := first["plurenet_node_member_direct_state"]; ok {
		t.Error("direct state listed for a node with transport relay")
	}
	if _, ok := first["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
}
