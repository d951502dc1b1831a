package relayserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/plures/plurenet/internal/wscork"
)

// Timeouts of the HTTP server that Serve runs. WebSocket connections are
// hijacked and governed by Config instead; these bound the plain requests and
// the upgrade request itself.
const (
	// readHeaderTimeout stops slowloris clients that never finish a request.
	readHeaderTimeout = 10 * time.Second
	// idleConnTimeout closes keep-alive HTTP connections (health checks,
	// scrapes) that went quiet.
	idleConnTimeout = 120 * time.Second
	// maxHeaderBytes is plenty for a WebSocket upgrade through a proxy.
	maxHeaderBytes = 16 << 10
	// shutdownSlack is added to DrainGrace for closing the remaining
	// connections and the HTTP server after a drain.
	shutdownSlack = 5 * time.Second
)

// newHTTPServer returns the server for h with the bounds above.
func (s *Server) newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleConnTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// net/http logs every failed TLS handshake from scanners; that is
		// debug detail for a public relay.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// Serve serves Handler on ln, over TLS when certFile and keyFile are given,
// until ctx ends. It then drains the relay (clients are asked to reconnect
// elsewhere and get DrainGrace to do it), shuts the HTTP server down and
// returns. The caller still calls Close.
func (s *Server) Serve(ctx context.Context, ln net.Listener, certFile, keyFile string) error {
	if (certFile == "") != (keyFile == "") {
		return errors.New("relayserver: serve: a TLS certificate needs its key and a key its certificate")
	}
	hs := s.newHTTPServer(s.Handler())
	hs.BaseContext = func(net.Listener) context.Context { return s.ctx }
	errc := make(chan error, 1)
	go func() {
		if certFile != "" {
			// A Conn below TLS lets the connection's cork send a
			// batch's records in one write (internal/wscork).
			errc <- hs.ServeTLS(wscork.NewListener(ln), certFile, keyFile)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		// The server stopped by itself: the listener failed or the
		// certificate did not load.
		return fmt.Errorf("relayserver: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	s.log.Info("relay: draining", "grace", s.cfg.DrainGrace)
	stopCtx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainGrace+shutdownSlack)
	defer cancel()
	// Drain first: it turns new upgrades and /healthz to 503 while the
	// listener still answers, so a load balancer moves clients away.
	derr := s.Drain(stopCtx)
	serr := hs.Shutdown(stopCtx)
	<-errc // http.ErrServerClosed once Shutdown has begun
	return errors.Join(derr, serr)
}
