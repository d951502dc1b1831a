package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/relayserver"
)

func init() {
	register(command{name: "relay", summary: "run a relay server (WebSocket, protocol v2)", run: runRelay})
}

func runRelay(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("relay")
	listen := fs.String("listen", pick(getenv("PLURENET_RELAY_LISTEN"), "127.0.0.1:8080"), "`address` to listen on (env PLURENET_RELAY_LISTEN); use :443 with TLS in production")
	stunListen := fs.String("stun-listen", pick(getenv("PLURENET_RELAY_STUN_LISTEN"), ":3478"), "UDP `address` of the STUN responder members use to learn their public address for direct paths (env PLURENET_RELAY_STUN_LISTEN); --stun-listen= (empty) disables it")
	certFile := fs.String("tls-cert", getenv("PLURENET_RELAY_TLS_CERT"), "TLS certificate `file` (PEM, env PLURENET_RELAY_TLS_CERT); serves wss:// with --tls-key")
	keyFile := fs.String("tls-key", getenv("PLURENET_RELAY_TLS_KEY"), "TLS private key `file` (PEM, env PLURENET_RELAY_TLS_KEY)")
	perKey := fs.Int("max-conns-per-key", relayserver.DefaultMaxConnsPerKey, "connections one key may hold in one rendezvous")
	maxConns := fs.Int("max-conns", relayserver.DefaultMaxConns, "connections this instance accepts")
	rate := fs.Int("rate", relayserver.DefaultRateBytesPerSec, "`bytes` per second accepted from one connection; 0 means unlimited")
	lifetime := fs.Duration("max-conn-lifetime", 0, "drain each connection at this age, e.g. 30m (0: never)")
	grace := fs.Duration("drain-grace", relayserver.DefaultDrainGrace, "time a drained client gets to reconnect elsewhere")
	backplane := fs.String("backplane", getenv("PLURENET_RELAY_BACKPLANE"), "Redis `URL` (redis://HOST:6379/0, rediss:// for TLS; env PLURENET_RELAY_BACKPLANE) shared by several relay instances; empty for a single instance")
	trustProxy := fs.Bool("trust-proxy-headers", false, "take the client address from the last X-Forwarded-For entry (only behind a proxy that always sets it)")
	perIP := fs.Int("max-conns-per-ip", relayserver.DefaultMaxConnsPerIP, "connections one client address (IPv4, or IPv6 /64) may hold; 0 means unlimited")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}

	log, err := newLogger(os.Stderr, *level)
	if err != nil {
		return err
	}
	switch {
	case (*certFile == "") != (*keyFile == ""):
		return usageErrorf("--tls-cert and --tls-key go together")
	case *perKey < 1:
		return usageErrorf("--max-conns-per-key must be at least 1")
	case *maxConns < 1:
		return usageErrorf("--max-conns must be at least 1")
	case *rate < 0:
		return usageErrorf("--rate must not be negative")
	case *lifetime < 0:
		return usageErrorf("--max-conn-lifetime must not be negative")
	case *lifetime > 0 && *lifetime < time.Second:
		return usageErrorf("--max-conn-lifetime %v is under a second; clients could not plan for it", *lifetime)
	case *grace <= 0:
		return usageErrorf("--drain-grace must be positive")
	case *perIP < 0:
		return usageErrorf("--max-conns-per-ip must not be negative")
	}
	perIPCfg := *perIP
	if perIPCfg == 0 {
		perIPCfg = -1 // unlimited in relayserver.Config
	}
	if *certFile != "" {
		// Load once here for a clear error; Serve loads them again.
		if _, err := tls.LoadX509KeyPair(*certFile, *keyFile); err != nil {
			return fmt.Errorf("loading TLS certificate: %w", err)
		}
	}
	rateCfg := *rate
	if rateCfg == 0 {
		rateCfg = -1 // unlimited in relayserver.Config
	}

	srv, err := relayserver.New(relayserver.Config{
		Logger:          log,
		MaxConnsPerKey:  *perKey,
		MaxConns:        *maxConns,
		RateBytesPerSec: rateCfg,
		MaxConnLifetime: *lifetime,
		DrainGrace:      *grace,

		Backplane:         *backplane,
		TrustProxyHeaders: *trustProxy,
		MaxConnsPerIP:     perIPCfg,
	})
	if err != nil {
		return err
	}
	defer srv.Close()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", *listen, err)
	}
	scheme := "ws"
	if *certFile != "" {
		scheme = "wss"
	}
	fmt.Fprintf(stdout, "plurenet relay listening on %s://%s%s (relay key %s)\n", scheme, ln.Addr(), relayproto.Path, srv.PublicKey())
	log.Info("relay: serving", "addr", ln.Addr().String(), "tls", *certFile != "", "max_conns_per_key", *perKey, "rate", *rate, "max_conn_lifetime", *lifetime, "backplane", *backplane != "")
	if *stunListen != "" {
		pc, err := net.ListenPacket("udp", *stunListen)
		if err != nil {
			return fmt.Errorf("--stun-listen %q: %w", *stunListen, err)
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
	if err := srv.Serve(ctx, ln, *certFile, *keyFile); err != nil {
		return err
	}
	log.Info("relay: stopped")
	return nil
}
