//go:build linux

package main

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/netlab"
	"github.com/plures/plurenet/overlay"
)

// TestLabOwnedRevokeMidTransfer: the revocation with kernel TUN
// nodes behind the lab's NATs. A server sends to two members at once;
// revoking one in the middle of its transfer cuts it off (the time from
// "plurenet revoke" to the last member dropping it is measured and logged;
// make bench has the loopback figure), while the other transfer completes
// with its SHA-256 intact.
func TestLabOwnedRevokeMidTransfer(t *testing.T) {
	m := newLabMesh(t)
	own := filepath.Join(privateDir(t), "owner")
	runOK(t, "owner", "init", "--owner-dir", own, "--topic", "lab-revoke", "--relay", m.relayURL)
	r1 := m.lab.NATRouter("r1", netlab.RouterConfig{})
	r2 := m.lab.NATRouter("r2", netlab.RouterConfig{})
	start := func(name string, r *netlab.Router) *labNode {
		return m.startInvited(m.lab.Host(name, r), name, runOK(t, "invite", "--owner-dir", own, "--name", name))
	}
	server, keeper, lost := start("server", r1), start("keeper", r2), start("lost", r2)
	waitMesh(t, server, keeper, lost)

	// The receivers read the first MiB and then nothing, so that both
	// transfers are under way, whatever the speed, when lost is revoked.
	const head = 1 << 20
	kept := startTransfer(t, server, keeper, 9001, 32<<20)
	cut := startTransfer(t, server, lost, 9002, 1<<30)
	kept.receive(head)
	cut.receive(head)

	began := time.Now()
	runOK(t, "revoke", "--owner-dir", own, "--state-dir", server.dir, "lost")
	lostKey := lost.mustStatus().PublicKey
	for _, n := range []*labNode{server, keeper} {
		for slices.ContainsFunc(n.mustStatus().Members, func(ms overlay.MemberStatus) bool { return ms.PublicKey == lostKey }) {
			if time.Since(began) > labMeshWait {
				t.Fatalf("%s still holds the revoked member after %v", n.name, labMeshWait)
			}
			time.Sleep(labPoll / 4)
		}
	}
	t.Logf("revoke mid-transfer: from \"plurenet revoke\" to the last member dropping lost: %v", time.Since(began).Round(time.Millisecond))

	finishTransfer(t, kept, kept.rest())

	// What was in flight and in lost's socket buffer still arrives; then
	// nothing: the stream stalls far short of its end.
	for {
		cut.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := io.CopyN(io.Discard, cut.conn, 1<<20)
		cut.got += n
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			break
		}
		if err != nil {
			t.Fatalf("lost's transfer: after %d bytes: %v (want it to stall)", cut.got, err)
		}
		if cut.got >= cut.size/2 {
			t.Fatalf("lost, revoked, still receives: %d of %d bytes", cut.got, cut.size)
		}
	}
	t.Logf("lost received %d of %d bytes, then nothing", cut.got, cut.size)
	if _, err := os.Stat(filepath.Join(keeper.dir, overlay.RevocationsFile)); err != nil {
		t.Fatalf("keeper did not keep the revocation list: %v", err)
	}
}
