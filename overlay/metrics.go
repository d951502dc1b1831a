package overlay

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/plures/plurenet/internal/httpserve"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/transports/direct"
)

// Node metrics: `plurenet up --metrics-listen ADDR` serves them as
// Prometheus text. They are read from the node's state when scraped (the
// same state Status shows, plus the drop counters of the Bind, the direct
// transport and the relay clients), so the packet path keeps no counter
// for them beyond those it keeps anyway. docs/operations.md lists every
// metric; docs/security.md says who may read them (member keys, names,
// addresses and traffic volumes: not for the world).
//
// Every name starts with plurenet_node_, apart from the relay's own
// plurenet_relay_* metrics. Label values come from the mesh's members and
// the node's configuration, so their number is bounded by the mesh size;
// member names are checked ASCII (mesh.ValidName) before a member is
// listed, so a member cannot make a label value the text format refuses.

var (
	mdNodeInfo = prometheus.NewDesc("plurenet_node_info",
		"The node: name, key, overlay addresses, transport mode and adapter (value 1).",
		[]string{"name", "public_key", "ipv4", "ipv6", "transport", "adapter"}, nil)
	mdStarted = prometheus.NewDesc("plurenet_node_start_time_seconds",
		"When the node started, in seconds since the Unix epoch.", nil, nil)
	mdMembers = prometheus.NewDesc("plurenet_node_members",
		"Other members the node knows.", nil, nil)
	mdDrops = prometheus.NewDesc("plurenet_node_drops_total",
		"Packets the node dropped, by reason (relay client drops are in plurenet_node_relay_drops_total).",
		[]string{"reason"}, nil)

	memberLabels = []string{"member", "name"}

	mdMemberInfo = prometheus.NewDesc("plurenet_node_member_info",
		"A member: overlay addresses and the path last used to send to it (\"\" before any traffic), value 1.",
		[]string{"member", "name", "ipv4", "ipv6", "path"}, nil)
	mdMemberRx = prometheus.NewDesc("plurenet_node_member_received_bytes_total",
		"Bytes received from the member (WireGuard's count, encrypted packets).", memberLabels, nil)
	mdMemberTx = prometheus.NewDesc("plurenet_node_member_sent_bytes_total",
		"Bytes sent to the member (WireGuard's count, encrypted packets).", memberLabels, nil)
	mdMemberTxPackets = prometheus.NewDesc("plurenet_node_member_sent_packets_total",
		"WireGuard packets handed to a transport for the member.", memberLabels, nil)
	mdMemberPathChanges = prometheus.NewDesc("plurenet_node_member_path_changes_total",
		"How many times the path to the member changed (the first choice counts one).", memberLabels, nil)
	mdMemberHandshakeAge = prometheus.NewDesc("plurenet_node_member_handshake_age_seconds",
		"Seconds since the last completed WireGuard handshake with the member; absent before the first.", memberLabels, nil)
	mdMemberLastSeenAge = prometheus.NewDesc("plurenet_node_member_last_seen_age_seconds",
		"Seconds since the member's last membership announcement.", memberLabels, nil)
	mdMemberDirectState = prometheus.NewDesc("plurenet_node_member_direct_state",
		"The direct UDP path's state (1 for the current state, 0 for the others); absent with transport relay.",
		[]string{"member", "name", "state"}, nil)
	mdMemberDirectRTT = prometheus.NewDesc("plurenet_node_member_direct_rtt_seconds",
		"ICE's latest round-trip time on the direct path; absent until ICE measured one.", memberLabels, nil)

	relayLabels = []string{"relay", "role"}

	mdRelayConnected = prometheus.NewDesc("plurenet_node_relay_connected",
		"1 while the node is connected to the relay, else 0.", relayLabels, nil)
	mdRelayReconnects = prometheus.NewDesc("plurenet_node_relay_reconnects_total",
		"Connections to the relay made after the first.", relayLabels, nil)
	mdRelayRateLimited = prometheus.NewDesc("plurenet_node_relay_rate_limited_total",
		"Rate-limit notices the relay sent (it dropped some of our frames).", relayLabels, nil)
	mdRelayPeers = prometheus.NewDesc("plurenet_node_relay_peers",
		"Keys present in the node's rendezvous on the relay.", relayLabels, nil)
	mdRelaySent = prometheus.NewDesc("plurenet_node_relay_sent_bytes_total",
		"Bytes written to the relay.", relayLabels, nil)
	mdRelayRecv = prometheus.NewDesc("plurenet_node_relay_received_bytes_total",
		"Bytes of data frames received from the relay.", relayLabels, nil)
	mdRelayDrops = prometheus.NewDesc("plurenet_node_relay_drops_total",
		"Frames the relay client dropped, by reason.", []string{"relay", "role", "reason"}, nil)
)

// Values of the reason label of plurenet_node_drops_total and
// plurenet_node_relay_drops_total. docs/operations.md explains each.
const (
	dropBindQueueFull   = "bind_queue_full" // the WireGuard device did not read fast enough
	dropBindClosed      = "bind_closed"     // a packet arrived while the device was down
	dropNoPath          = "no_path"         // no transport could send to the member
	dropCongested       = "congested"       // a transport dropped packets it could not send now
	dropTUNForeign      = "tun_foreign"     // a member sent to an address not this node's (kernel TUN)
	dropUnknownSource   = "direct_unknown_source"
	dropDirectOther     = "direct_not_plurenet"
	dropSTUNQueue       = "direct_stun_queue"
	dropDirectNoDeliver = "direct_no_receiver"
	dropBadSignal       = "direct_bad_signal"
	dropMeshRate        = "direct_mesh_rate"
	dropMeshQueue       = "direct_mesh_queue"
	dropBatchFull       = "direct_batch_full"
	dropBadCandidate    = "direct_refused_candidate"

	dropRelaySend    = "send"          // could not be handed to the relay socket
	dropRelayRecv    = "receive_queue" // the receive queue was full
	dropRelayIgnored = "ignored"       // neither WireGuard to us nor a sealed message
)

// directStates are the values of plurenet_node_member_direct_state's
// state label, one series each so that a dashboard sees the state change.
var directStates = []direct.PathState{direct.StateConnecting, direct.StateDirect, direct.StateUnanswered, direct.StateLost}

// nodeCollector reads a node's metrics when scraped.
type nodeCollector struct{ n *Node }

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		mdNodeInfo, mdStarted, mdMembers, mdDrops,
		mdMemberInfo, mdMemberRx, mdMemberTx, mdMemberTxPackets, mdMemberPathChanges,
		mdMemberHandshakeAge, mdMemberLastSeenAge, mdMemberDirectState, mdMemberDirectRTT,
		mdRelayConnected, mdRelayReconnects, mdRelayRateLimited, mdRelayPeers, mdRelaySent, mdRelayRecv, mdRelayDrops,
	} {
		ch <- d
	}
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	now := time.Now()
	st := n.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	gauge(mdNodeInfo, 1, st.Name, st.PublicKey, st.IPv4, st.IPv6, st.Transport, st.Adapter)
	gauge(mdStarted, float64(st.Started.UnixNano())/1e9)
	gauge(mdMembers, float64(len(st.Members)))

	bs := n.bind.Stats()
	counter(mdDrops, bs.DropsQueueFull, dropBindQueueFull)
	counter(mdDrops, bs.DropsClosed, dropBindClosed)
	counter(mdDrops, bs.DropsNoPath, dropNoPath)
	counter(mdDrops, bs.DropsCongested, dropCongested)
	counter(mdDrops, st.ForeignDropped, dropTUNForeign)
	if n.direct != nil {
		ds := n.direct.Stats()
		for _, d := range []struct {
			reason string
			v      uint64
		}{
			{dropUnknownSource, ds.DropsUnknownSrc},
			{dropDirectOther, ds.DropsOther},
			{dropSTUNQueue, ds.DropsSTUNQueue},
			{dropDirectNoDeliver, ds.DropsNoDeliver},
			{dropBadSignal, ds.DropsBadSignal},
			{dropMeshRate, ds.DropsMeshRate},
			{dropMeshQueue, ds.DropsMeshQueue},
			{dropBatchFull, ds.DropsBatchFull},
			{dropBadCandidate, ds.DropsCandidate},
		} {
			counter(mdDrops, d.v, d.reason)
		}
	}

	for _, m := range st.Members {
		who := []string{m.PublicKey, m.Name}
		gauge(mdMemberInfo, 1, m.PublicKey, m.Name, m.IPv4, m.IPv6, m.Path)
		// The Bind's per-peer path state, which Status's JSON does not
		// show in full (no packet count).
		if k, err := nodekey.ParsePublic(m.PublicKey); err == nil {
			p := n.bind.PathTo(k)
			counter(mdMemberTxPackets, p.Packets, who...)
			counter(mdMemberPathChanges, uint64(p.Changes), who...)
		}
		counter(mdMemberRx, m.RxBytes, who...)
		counter(mdMemberTx, m.TxBytes, who...)
		if !m.LastHandshake.IsZero() {
			gauge(mdMemberHandshakeAge, now.Sub(m.LastHandshake).Seconds(), who...)
		}
		if !m.LastSeen.IsZero() {
			gauge(mdMemberLastSeenAge, now.Sub(m.LastSeen).Seconds(), who...)
		}
		if m.Direct != nil {
			for _, s := range directStates {
				v := 0.0
				if m.Direct.State == s.String() {
					v = 1
				}
				gauge(mdMemberDirectState, v, m.PublicKey, m.Name, s.String())
			}
			if m.Direct.RTTMs > 0 {
				gauge(mdMemberDirectRTT, m.Direct.RTTMs/1000, who...)
			}
		}
	}

	for i, c := range n.relays {
		rs := c.Status()
		who := []string{n.cfg.Relays[i], relayRole(i)}
		connected := 0.0
		if rs.Connected {
			connected = 1
		}
		gauge(mdRelayConnected, connected, who...)
		counter(mdRelayReconnects, uint64(rs.Reconnects), who...)
		counter(mdRelayRateLimited, rs.RateLimited, who...)
		gauge(mdRelayPeers, float64(rs.Peers), who...)
		counter(mdRelaySent, rs.SentBytes, who...)
		counter(mdRelayRecv, rs.RecvBytes, who...)
		counter(mdRelayDrops, rs.SendDrops, append(who, dropRelaySend)...)
		counter(mdRelayDrops, rs.RecvDrops, append(who, dropRelayRecv)...)
		counter(mdRelayDrops, rs.RecvIgnored, append(who, dropRelayIgnored)...)
	}

	// The swarm's DHT adds its metrics here, as plurenet_node_dht_*
	// (routing table size, lookups, announcements), when it runs.
}

// metricsRegistry is the node's registry: the node collector and the Go
// runtime and process metrics, in a registry of its own so that several
// nodes in one process (tests, an embedding program) do not collide.
func (n *Node) metricsRegistry() *prometheus.Registry {
	n.metricsOnce.Do(func() {
		reg := prometheus.NewRegistry()
		reg.MustRegister(nodeCollector{n},
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		n.metricsReg = reg
	})
	return n.metricsReg
}

// MetricsHandler serves GET /metrics: the node's Prometheus metrics, read
// from its state at each scrape.
func (n *Node) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metricsRegistry(), promhttp.HandlerOpts{}))
	return mux
}

// Bounds of the metrics server: a scraper sends a short GET and reads a
// reply of a few kilobytes per member, so these only stop a stuck or
// hostile client from holding a connection.
const (
	metricsHeaderTimeout = 5 * time.Second
	metricsWriteTimeout  = 30 * time.Second
	metricsIdleTimeout   = 2 * time.Minute
	metricsMaxHeader     = 8 << 10
	metricsStopSlack     = 2 * time.Second
)

// ServeMetrics serves MetricsHandler on ln until ctx ends, then shuts that
// server down and returns nil; it returns an error if serving fails first.
func (n *Node) ServeMetrics(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           n.MetricsHandler(),
		ReadHeaderTimeout: metricsHeaderTimeout,
		WriteTimeout:      metricsWriteTimeout,
		IdleTimeout:       metricsIdleTimeout,
		MaxHeaderBytes:    metricsMaxHeader,
	}
	if err := httpserve.Serve(ctx, hs, ln, metricsStopSlack); err != nil {
		return fmt.Errorf("node metrics on %s: %w", ln.Addr(), err)
	}
	return nil
}

// metricsState is the Node's lazily built registry.
type metricsState struct {
	metricsOnce sync.Once
	metricsReg  *prometheus.Registry
}
