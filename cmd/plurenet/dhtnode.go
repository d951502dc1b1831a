package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/plures/plurenet/discovery/dht"
)

func init() {
	register(command{name: "dht-node", summary: "run a plain Mainline DHT node (no mesh), e.g. for a private DHT", run: runDHTNode})
}

// DHT node rates: a node of a private DHT serves every member's lookups
// (a few dozen datagrams each, repeated with backoff), so it may send and
// receive more than a member's own node; the bounds keep a flood of
// queries from making it a traffic amplifier.
const (
	dhtNodeSendRate = 200
	dhtNodeRecvRate = 400
	// dhtNodeStopWait bounds the wait for the table maintainer at exit:
	// a bucket refresh in flight ends within the library's query timeouts.
	dhtNodeStopWait = 5 * time.Second
)

func runDHTNode(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("dht-node")
	listen := fs.String("listen", "0.0.0.0:6881", "UDP address to listen on")
	boot := fs.String("bootstrap", "", "HOST:PORT,... of DHT nodes to join through (default: the library's public bootstrap routers; \"none\" for the first node of a private DHT)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(os.Stderr, *level)
	if err != nil {
		return usageErrorf("--log-level: %v", err)
	}
	var bootstrap []string // nil: the library's default routers
	switch *boot {
	case "":
	case "none":
		bootstrap = []string{}
	default:
		bootstrap = strings.Split(*boot, ",")
		if err := dht.CheckBootstrap(bootstrap); err != nil {
			return usageErrorf("--bootstrap: %v", err)
		}
	}
	pc, err := net.ListenPacket("udp4", *listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", *listen, err)
	}
	srv, _, err := dht.NewServer(dht.LimitConn(pc, dhtNodeRecvRate), dht.ServerConfig{Bootstrap: bootstrap, SendRate: dhtNodeSendRate, Logger: log})
	if err != nil {
		pc.Close()
		return err
	}
	fmt.Fprintf(stdout, "plurenet dht-node listening on udp %s (node id %x)\n", pc.LocalAddr(), srv.ID())
	// The library's table maintainer bootstraps when the table is empty
	// and refreshes buckets every minute; it returns when srv closes
	// (after a refresh in progress, hence the bounded wait).
	maintained := make(chan struct{})
	go func() {
		defer close(maintained)
		srv.TableMaintainer()
	}()
	defer func() {
		srv.Close()
		select {
		case <-maintained:
		case <-time.After(dhtNodeStopWait):
		}
	}()
	if len(bootstrap) > 0 || bootstrap == nil {
		if _, err := srv.BootstrapContext(ctx); err != nil && ctx.Err() == nil {
			log.Warn("dht-node: bootstrap", "err", err)
		}
	}
	log.Info("dht-node: serving", "addr", pc.LocalAddr().String(), "nodes", srv.NumNodes())
	<-ctx.Done()
	return nil
}
