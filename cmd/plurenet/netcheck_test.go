package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/plures/plurenet/internal/stuntest"
	"github.com/plures/plurenet/netcheck"
)

// TestNetcheckCommand runs "plurenet netcheck" against a relay and two
// STUN servers on loopback (port mapping off: the test must not talk to
// this machine's real gateway), as text and as JSON.
func TestNetcheckCommand(t *testing.T) {
	relayURL := startTestRelay(t)
	args := []string{"netcheck", "--relay", relayURL, "--stun", stuntest.Server(t), "--stun", stuntest.Server(t), "--port-mapping", "off"}

	var out, errOut bytes.Buffer
	if code := run(append(args, "--json"), &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rep netcheck.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, out.String())
	}
	if !rep.UDP || rep.Mapping != netcheck.MappingNone || rep.Verdict != netcheck.VerdictDirect || len(rep.Relays) != 1 || rep.Relays[0].HandshakeMs <= 0 || rep.PortMapping != nil {
		t.Fatalf("report %+v", rep)
	}

	out.Reset()
	if code := run(args, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"UDP:", "yes: 2 of 2 STUN servers answered", "NAT mapping:", "none: this host has a public address",
		"Port mapping:", "not checked", "IPv6:", "Relays:", "WebSocket open in", "Direct paths should work"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, out.String())
		}
	}

	for _, bad := range [][]string{
		{"netcheck", "--stun", "nohostport", "--port-mapping", "off"},
		{"netcheck", "--relay", "http://x", "--port-mapping", "off"},
		{"netcheck", "--port-mapping", "maybe"},
	} {
		if code := run(bad, &out, &errOut); code != 2 {
			t.Errorf("%q: exit %d, want 2 (usage)", bad, code)
		}
	}
}
