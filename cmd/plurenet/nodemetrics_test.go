package main

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
)

// TestNodeMetricsListen: a port alone listens on loopback; an address
// written out is used as given, with a warning when it reaches beyond
// loopback; a bad one is a usage error naming the flag.
func TestNodeMetricsListen(t *testing.T) {
	for _, tc := range []struct {
		addr     string
		loopback bool
		warn     bool
	}{
		{"0", true, false},
		{":0", true, false},
		{"127.0.0.1:0", true, false},
		{"0.0.0.0:0", false, true},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			var logs bytes.Buffer
			ln, err := listenNodeMetrics(tc.addr, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			ap := netip.MustParseAddrPort(ln.Addr().String())
			if ap.Addr().IsLoopback() != tc.loopback {
				t.Errorf("listens on %s, want loopback %v", ap, tc.loopback)
			}
			if warned := strings.Contains(logs.String(), "member keys"); warned != tc.warn {
				t.Errorf("warned %v, want %v: %q", warned, tc.warn, logs.String())
			}
		})
	}
	_, err := listenNodeMetrics("127.0.0.1:notaport", quietLogger())
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--metrics-listen") {
		t.Fatalf("bad address: %v, want a usage error naming --metrics-listen", err)
	}
}
