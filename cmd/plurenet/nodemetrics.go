package main

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
)

// listenNodeMetrics opens the listener of `up --metrics-listen ADDR`. A
// bare port ("9101" or ":9101") listens on 127.0.0.1 only: the metrics name
// every member's key, name and addresses and how much each one sends, so
// only an address written out in full (a private one for a Prometheus on
// another host, or 0.0.0.0) reaches further, with a warning.
func listenNodeMetrics(addr string, log *slog.Logger) (net.Listener, error) {
	addr = strings.TrimSpace(addr)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		// A bare port.
		host, port = "", addr
	}
	if host == "" {
		host = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, usageErrorf("--metrics-listen %q: %v (want 127.0.0.1:9101, or a port alone for loopback)", addr, err)
	}
	if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil && !ap.Addr().Unmap().IsLoopback() {
		log.Warn("node metrics listen beyond loopback: they show member keys, names, addresses and traffic volumes; let only your monitoring reach that port",
			"addr", ln.Addr().String())
	}
	return ln, nil
}
