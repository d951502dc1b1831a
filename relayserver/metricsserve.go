package relayserver

import (
	"context"
	"fmt"
	"net"
	"net/http"

	"github.com/plures/plurenet/internal/httpserve"
)

// MetricsHandler serves GET /metrics: the relay's Prometheus metrics. They
// are for the operator (connection counts, drop and handshake outcomes,
// memory), so Handler, which clients reach, does not serve them; an
// embedding program mounts this where only its monitoring can reach it.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.handler())
	return mux
}

// ServeMetrics serves MetricsHandler on ln until ctx ends, then shuts that
// server down. It is the `plurenet relay --metrics-listen` listener: put ln
// on loopback or a private network, not beside the public relay.
func (s *Server) ServeMetrics(ctx context.Context, ln net.Listener) error {
	if err := httpserve.Serve(ctx, s.newHTTPServer(s.MetricsHandler()), ln, shutdownSlack); err != nil {
		return fmt.Errorf("relayserver: metrics on %s: %w", ln.Addr(), err)
	}
	return nil
}
