package relayserver

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Label values. They are fixed sets, so a client cannot grow the metric
// cardinality.
const (
	kindUnicast   = "unicast"
	kindBroadcast = "broadcast"

	dropNoSuchPeer  = "no_such_peer" // Send to a key not in the rendezvous
	dropQueueFull   = "queue_full"   // the receiver's send queue was at its cap
	dropRateLimited = "rate_limited" // the sender exceeded its byte rate
	dropClosed      = "closed"       // queued for a connection that then failed, or for a key whose every connection was closing

	hsOK           = "ok"
	hsBadFrame     = "bad_frame"
	hsBadVersion   = "bad_version"
	hsAuthFailed   = "auth_failed"
	hsTooMany      = "too_many_conns"
	hsTimeout      = "timeout"
	hsShutdown     = "shutdown"
	hsDisconnect   = "disconnected"
	hsRefusedFull  = "refused_full"
	hsRefusedDrain = "refused_draining"
	// Refused before the upgrade by the per-address limits.
	hsRefusedIPConns = "refused_ip_conns"
	hsRefusedIPRate  = "refused_ip_rate"
)

// hsRendezvousFull: the rendezvous was at its member cap. With a backplane a
// connection admitted on this instance's view and then refused by Redis is
// counted ok here and in plurenet_relay_backplane_evicted_total.
const hsRendezvousFull = "rendezvous_full"

// metrics are one Server's Prometheus metrics, in a registry of its own so
// that several servers (tests, or an embedding program) do not collide.
type metrics struct {
	reg        *prometheus.Registry
	frames     *prometheus.CounterVec
	bytes      *prometheus.CounterVec
	drops      *prometheus.CounterVec
	handshakes *prometheus.CounterVec
	charged    prometheus.Counter

	// Resolved children for the per-frame paths, sparing a label hash and
	// lock per frame.
	framesBy map[string]prometheus.Counter
	bytesBy  map[string]prometheus.Counter
	dropsBy  map[string]prometheus.Counter
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plurenet_relay_frames_forwarded_total",
			Help: "Frames queued to a receiving connection (a broadcast counts once per receiver).",
		}, []string{"kind"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plurenet_relay_bytes_forwarded_total",
			Help: "Payload bytes queued to receiving connections (a broadcast counts once per receiver).",
		}, []string{"kind"}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plurenet_relay_drops_total",
			Help: "Frames the relay dropped, by reason.",
		}, []string{"reason"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plurenet_relay_handshakes_total",
			Help: "Connection attempts by outcome.",
		}, []string{"result"}),
		charged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "plurenet_relay_rate_charged_bytes_total",
			Help: "Bytes charged to connections' rate limits for the frames they had forwarded: each frame's size plus per-frame overhead, once per receiver.",
		}),
	}
	m.framesBy = make(map[string]prometheus.Counter)
	m.bytesBy = make(map[string]prometheus.Counter)
	m.dropsBy = make(map[string]prometheus.Counter)
	for _, k := range []string{kindUnicast, kindBroadcast} {
		m.framesBy[k] = m.frames.WithLabelValues(k)
		m.bytesBy[k] = m.bytes.WithLabelValues(k)
	}
	for _, r := range []string{dropNoSuchPeer, dropQueueFull, dropRateLimited, dropClosed} {
		m.dropsBy[r] = m.drops.WithLabelValues(r)
	}
	for _, r := range []string{hsOK, hsBadFrame, hsBadVersion, hsAuthFailed, hsTooMany, hsRendezvousFull, hsTimeout, hsShutdown, hsDisconnect, hsRefusedFull, hsRefusedDrain, hsRefusedIPConns, hsRefusedIPRate} {
		m.handshakes.WithLabelValues(r)
	}
	m.reg.MustRegister(
		m.frames, m.bytes, m.drops, m.handshakes, m.charged,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "plurenet_relay_connections",
			Help: "Open client WebSocket connections, including those still in the handshake.",
		}, func() float64 { return float64(s.Stats().Connections) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "plurenet_relay_rendezvous",
			Help: "Rendezvous with at least one member.",
		}, func() float64 { return float64(s.router.rendezvousCount()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "plurenet_relay_source_addresses",
			Help: "Source addresses (IPv4, or IPv6 /64) with a connection open; IPv6 /56 and /48 are limited too but not counted here.",
		}, func() float64 { n, _ := s.sources.counts(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "plurenet_relay_queued_bytes",
			Help: "Bytes waiting in all send queues.",
		}, func() float64 { return float64(s.Stats().QueuedBytes) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *metrics) forwarded(kind string, frames, payloadBytes int) {
	m.forwardedTotal(kind, frames, frames*payloadBytes)
}

// forwardedTotal counts packets forwarded that carried payloadBytes in all
// (a batch's packets differ in size).
func (m *metrics) forwardedTotal(kind string, packets, payloadBytes int) {
	if packets == 0 {
		return
	}
	m.framesBy[kind].Add(float64(packets))
	m.bytesBy[kind].Add(float64(payloadBytes))
}

func (m *metrics) drop(reason string, n int) {
	if n > 0 {
		m.dropsBy[reason].Add(float64(n))
	}
}

func (m *metrics) handshake(result string) { m.handshakes.WithLabelValues(result).Inc() }

func (m *metrics) charge(n int) { m.charged.Add(float64(n)) }
