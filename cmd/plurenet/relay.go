package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
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
