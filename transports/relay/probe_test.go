package relay

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/plures/plurenet/relayserver"
)

// TestProbe: Probe times the WebSocket opening to a real relay, and says
// so when the URL answers but is not a plurenet relay, or does not answer.
func TestProbe(t *testing.T) {
	r := startRelay(t, relayserver.Config{Logger: quietLogger()}, nil)
	took, err := Probe(context.Background(), ProbeConfig{URL: r.url})
	if err != nil || took <= 0 {
		t.Fatalf("Probe(%s) = %v, %v; want a positive time", r.url, took, err)
	}

	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "a web page", http.StatusOK)
	}))
	defer web.Close()
	if _, err := Probe(context.Background(), ProbeConfig{URL: "ws://" + web.Listener.Addr().String()}); err == nil || !strings.Contains(err.Error(), "dial") {
		t.Errorf("Probe of a web server: %v; want a dial error", err)
	}
	addr := web.Listener.Addr().String()
	web.Close()
	if _, err := Probe(context.Background(), ProbeConfig{URL: "ws://" + addr}); err == nil {
		t.Error("Probe of a closed port succeeded")
	}
	if _, err := Probe(context.Background(), ProbeConfig{URL: "http://x"}); err == nil {
		t.Error("Probe accepted an http:// URL")
	}
}
