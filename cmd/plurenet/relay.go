package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/relayserver"
)

func init() {
	register(command{name: "relay", summary: "run a relay server (WebSocket, protocol v2)", run: runRelay})
}

func runRelay(ctx context.Context, args []string, stdout io.Writer) error {
	run, err := newRelaySettings().parse(args, getenv)
	if err != nil {
		return err
	}
	log, err := newLogger(os.Stderr, run.logLevel)
	if err != nil {
		return err
	}
	if run.cfg.Backplane, err = backplaneURL(run.cfg.Backplane, run.backplaneFile, run.backplaneFromFlag, log); err != nil {
		return err
	}
	if run.certFile != "" {
		// Load once here for a clear error; Serve loads them again.
		if _, err := tls.LoadX509KeyPair(run.certFile, run.keyFile); err != nil {
			return fmt.Errorf("loading TLS certificate: %w", err)
		}
	}
	run.cfg.Logger = log
	srv, err := relayserver.New(run.cfg)
	if err != nil {
		return err
	}
	defer srv.Close()

	ln, err := net.Listen("tcp", run.listen)
	if err != nil {
		return fmt.Errorf("%s %q: %w", run.listenFrom, run.listen, err)
	}
	// Before the listening line, which tells scripts the relay is ready.
	if run.metricsListen != "" {
		stop, err := serveMetrics(ctx, srv, run.metricsListen, run.metricsFrom, stdout, log)
		if err != nil {
			ln.Close()
			return err
		}
		defer stop()
	}
	scheme := "ws"
	if run.certFile != "" {
		scheme = "wss"
	}
	fmt.Fprintf(stdout, "plurenet relay listening on %s://%s%s (relay key %s)\n", scheme, ln.Addr(), relayproto.Path, srv.PublicKey())
	log.Info("relay: serving", append([]any{"addr", ln.Addr().String()}, run.logAttrs()...)...)
	if run.stunListen != "" {
		pc, err := net.ListenPacket("udp", run.stunListen)
		if err != nil {
			return fmt.Errorf("%s %q: %w", run.stunFrom, run.stunListen, err)
		}
		stunCtx, stopSTUN := context.WithCancel(ctx)
		stunDone := make(chan struct{})
		go func() {
			defer close(stunDone)
			if err := relayserver.ServeSTUN(stunCtx, pc, log); err != nil {
				log.Error("relay: STUN responder stopped", "err", err)
			}
		}()
		defer func() {
			stopSTUN()
			<-stunDone
			pc.Close()
		}()
		fmt.Fprintf(stdout, "plurenet relay STUN responder on udp %s\n", pc.LocalAddr())
		log.Info("relay: STUN responder", "addr", pc.LocalAddr().String())
	}
	defer systemdReady(log, "serving "+ln.Addr().String())() // Type=notify units: ready now, stopping on return
	if err := srv.Serve(ctx, ln, run.certFile, run.keyFile); err != nil {
		return err
	}
	log.Info("relay: stopped")
	return nil
}

// serveMetrics listens on addr and serves the relay's metrics there until
// ctx ends or the returned stop is called (which waits for it).
// from names where addr came from, for the error of listening on it.
func serveMetrics(ctx context.Context, srv *relayserver.Server, addr, from string, stdout io.Writer, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", from, addr, err)
	}
	if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil && ap.Addr().IsUnspecified() {
		log.Warn("relay: metrics listen on every interface: let only your monitoring reach that port", "addr", ln.Addr().String())
	}
	fmt.Fprintf(stdout, "plurenet relay metrics on http://%s/metrics\n", ln.Addr())
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.ServeMetrics(mctx, ln); err != nil {
			log.Error("relay: metrics listener stopped", "err", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}, nil
}
