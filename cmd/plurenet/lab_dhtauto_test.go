//go:build linux

package main

// Network-lab test of auto mode with the DHT: members behind home NATs
// with a relay and a private DHT; every relay goes down, and members still
// meet and move data through the DHT. Same lab and binary as lab_test.go;
// it needs root and skips without it.

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/plures/plurenet/discovery/dht"
	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/netlab"
	"github.com/plures/plurenet/overlay"
	"github.com/plures/plurenet/transports/relay"
)

// labDHTAutoMeetWait bounds members meeting through the DHT with every
// relay down. A member's hellos get through the other's NAT only once the
// other has sent to it, i.e. once the other looked it up: lookups pause
// at most dht.MaxInterval, then both sides' announce rounds and path
// checks follow. Typically far less: the members look up at once when
// the last relay goes.
const labDHTAutoMeetWait = dht.MaxInterval + 4*mesh.AnnounceInterval

// startAutoDHT starts an auto-mode member on h with the lab's relay and
// --dht on with the lab DHT, in state directory dir ("" for a new one).
func (d *labDHT) startAutoDHT(h *netlab.Host, name, dir string) *labNode {
	d.t.Helper()
	if dir == "" {
		dir = privateDir(d.t)
	}
	n := &labNode{t: d.t, m: d.labMesh, name: name, host: h, dir: dir}
	n.proc = h.Start(context.Background(), d.bin, "up", "--tun", labTUN, "--transport", "auto",
		"--relay", d.relayURL, "--dht", "on", "--dht-bootstrap", d.boot,
		"--topic", labTopic, "--key", labKey, "--state-dir", dir, "--name", name)
	return n
}

// labRelayBackWait bounds a member's reconnect to a relay that came back:
// its reconnect delay is up to relay.DefaultMaxBackoff after a long
// outage, then a dial.
const labRelayBackWait = relay.DefaultMaxBackoff + labStartWait

// waitRelays waits until every node's relay is connected (up) or not.
func waitRelays(t *testing.T, up bool, nodes ...*labNode) {
	t.Helper()
	wait := labMeshWait // the death of a relay is seen at once (its TCP connections are reset)
	if up {
		wait = labRelayBackWait
	}
	for _, n := range nodes {
		deadline := time.Now().Add(wait)
		for {
			st := n.mustStatus()
			if len(st.Relays) == 1 && st.Relays[0].Connected == up {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's relays after %v: %+v; want connected=%v", n.name, wait, st.Relays, up)
			}
			time.Sleep(labPoll)
		}
	}
}

// TestLabDHTAutoRelayDown: a private DHT of 8 dht-nodes, a relay, and
// members behind three home NATs in --transport auto --dht on. a and b
// meet on the relay; the relay is killed (every relay down). c joins with
// no relay up and meets a and b through the DHT, and 64 MiB move from a
// to c with SHA-256 intact on a direct path; b restarts (a new port, the
// relay still down) and is met again; the relay comes back and every
// member is on it again (no path found without ICE is left), with traffic
// flowing.
func TestLabDHTAutoRelayDown(t *testing.T) {
	d := newLabDHT(t)
	lab := d.lab
	d.relayHost = lab.Host("relay", lab.Internet())
	d.relayURL = "ws://" + netip.AddrPortFrom(d.relayHost.Addr(), labRelayPort).String()
	d.startRelay()
	ha := lab.Host("a", lab.NATRouter("r1", netlab.RouterConfig{}))
	hb := lab.Host("b", lab.NATRouter("r2", netlab.RouterConfig{}))
	hc := lab.Host("c", lab.NATRouter("r3", netlab.RouterConfig{}))

	a := d.startAutoDHT(ha, "a", "")
	b := d.startAutoDHT(hb, "b", "")
	waitMesh(t, a, b)
	ping(t, a.host, b.ip4)
	if st := a.mustStatus(); st.Transport != "auto" || st.DHT == nil {
		t.Fatalf("a: transport %q, DHT status %+v; want auto with the DHT", st.Transport, st.DHT)
	}

	d.relay.Kill() // SIGKILL: every relay down, no goodbye
	waitRelays(t, false, a, b)
	t.Log("the relay is down")

	began := time.Now()
	c := d.startAutoDHT(hc, "c", "")
	waitMeshWithin(t, labDHTAutoMeetWait, a, b, c)
	t.Logf("c joined with every relay down and met a and b through the DHT %v after it started", time.Since(began).Round(time.Millisecond))

	firstByte, rate := transferOverlay(t, c, a, 9000, 1, nil)
	t.Logf("64 MiB a -> c with every relay down: first byte after %v, %.1f MiB/s, SHA-256 intact", firstByte.Round(time.Millisecond), rate/(1<<20))
	for _, pair := range [][2]*labNode{{a, c}, {c, a}} {
		m := memberView(t, pair[0], pair[1].name)
		if m.Path != pathDirect || m.Direct == nil || m.Direct.State != directState || m.Direct.Remote == "" || !m.Direct.Static {
			t.Fatalf("%s's view of %s with every relay down: %s; want direct on a path found without ICE", pair[0].name, pair[1].name, describe(m))
		}
	}
	if m := memberView(t, c, "a"); m.Via != "dht" && m.Via != "forward" {
		t.Fatalf("c met a via %q, want dht or forward", m.Via)
	}
	if st := c.mustStatus(); st.DHT == nil || st.DHT.RoutingTable == 0 || st.DHT.Found == 0 {
		t.Fatalf("c's DHT status: %+v", st.DHT)
	}
	if out := labRun(t, c.host, d.bin, "status", "--state-dir", c.dir); !strings.Contains(out, "\ndht: ") {
		t.Fatalf("plurenet status of c (auto mode with the DHT) has no dht line:\n%s", out)
	}

	t.Run("restarted member is met again with the relay down", func(t *testing.T) {
		stopNode(t, b)
		began := time.Now()
		b = d.startAutoDHT(hb, "b", b.dir)
		waitMeshWithin(t, labDHTAutoMeetWait, a, b, c)
		t.Logf("b restarted with every relay down: met a and c again %v after it started", time.Since(began).Round(time.Millisecond))
		ping(t, b.host, c.ip4)
		ping(t, a.host, b.ip4)
	})

	t.Run("relay back", func(t *testing.T) {
		d.startRelay()
		waitRelays(t, true, a, b, c)
		// Relay and ICE take the members back: no DHT-found path is
		// left to compete with them.
		for _, pair := range [][2]*labNode{{a, c}, {c, a}, {b, c}} {
			waitMember(t, pair[0], pair[1].name, labMeshWait, pair[0].name+"'s DHT-found path to "+pair[1].name+" dropped",
				func(m overlay.MemberStatus) bool { return m.Direct == nil || !m.Direct.Static })
		}
		ping(t, a.host, c.ip4)
		ping(t, c.host, b.ip4)
		ping(t, b.host, a.ip4)
	})
}
