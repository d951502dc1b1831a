package relayserver_test

import (
	"context"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/relayserver"
)

// TestRendezvousAloneDoesNotAdmit is issue 9 item 4: a client that knows a
// mesh's rendezvous, and even its admission public key (both travel in
// every member's hello, so the relay operator, an observer of a ws:// link
// and a former member after a change of secret all have them), but not the
// secret, can neither join the rendezvous nor send into it. Under protocol
// v1 the rendezvous alone admitted any key.
func TestRendezvousAloneDoesNotAdmit(t *testing.T) {
	r := newRelay(t, relayserver.Config{})
	mesh := rendezvous(1)
	member := connect(t, r, newKey(t), mesh)

	// What the attacker saw: a member's hello on another connection.
	ws := dialWS(t, r.url, nil)
	seen := answer(t, readServerHello(t, ws), newKey(t), newKey(t), mesh)
	ws.CloseNow()

	attacker := newKey(t)
	attempts := []struct {
		name  string
		hello func(sh relayproto.ServerHello) relayproto.ClientHello
	}{
		{"the rendezvous with an admission key of its own", func(sh relayproto.ServerHello) relayproto.ClientHello {
			// Both proofs honest for what it sends: only the check that
			// the rendezvous is the admission key's hash stops it.
			ch := answer(t, sh, attacker, attacker, rendezvous(99))
			ch.Rendezvous = mesh.Rendezvous()
			tr := relayproto.Transcript{ServerKey: sh.ServerKey, Challenge: sh.Challenge, ClientKey: attacker.Public(), Admission: ch.Admission, Rendezvous: ch.Rendezvous}
			shared, err := attacker.SharedSecret(sh.ServerKey)
			if err != nil {
				t.Fatal(err)
			}
			ch.MAC, ch.Signature = tr.MAC(shared), tr.Sign(rendezvous(99))
			return ch
		}},
		{"the observed admission key and a signature recorded on another connection", func(sh relayproto.ServerHello) relayproto.ClientHello {
			ch := answer(t, sh, attacker, attacker, rendezvous(99))
			ch.Admission, ch.Rendezvous, ch.Signature = seen.Admission, seen.Rendezvous, seen.Signature
			tr := relayproto.Transcript{ServerKey: sh.ServerKey, Challenge: sh.Challenge, ClientKey: attacker.Public(), Admission: ch.Admission, Rendezvous: ch.Rendezvous}
			shared, err := attacker.SharedSecret(sh.ServerKey)
			if err != nil {
				t.Fatal(err)
			}
			ch.MAC = tr.MAC(shared) // its own key, honestly proved
			return ch
		}},
		{"the observed admission key and a signature by another key", func(sh relayproto.ServerHello) relayproto.ClientHello {
			ch := answer(t, sh, attacker, attacker, rendezvous(99))
			tr := relayproto.Transcript{ServerKey: sh.ServerKey, Challenge: sh.Challenge, ClientKey: attacker.Public(), Admission: seen.Admission, Rendezvous: seen.Rendezvous}
			shared, err := attacker.SharedSecret(sh.ServerKey)
			if err != nil {
				t.Fatal(err)
			}
			ch.Admission, ch.Rendezvous, ch.MAC, ch.Signature = seen.Admission, seen.Rendezvous, tr.MAC(shared), tr.Sign(rendezvous(99))
			return ch
		}},
	}
	for _, at := range attempts {
		t.Run(at.name, func(t *testing.T) {
			ws := dialWS(t, r.url, nil)
			ch := at.hello(readServerHello(t, ws))
			writeMsg(t, ws, ch.Append(nil))
			// The attacker then tries to send into the mesh anyway.
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			_ = ws.Write(ctx, websocket.MessageBinary, relayproto.AppendBroadcast(nil, []byte("garbage")))
			if fs := expectClose(t, ws, relayproto.ErrAuthFailed, websocket.StatusPolicyViolation); len(fs) != 0 {
				t.Fatalf("attacker got frames before its refusal: %+v", fs)
			}
		})
	}
	// The member saw none of it: the next thing it hears of is an honest
	// joiner, not the attacker's PeerPresent or broadcast.
	other := connect(t, r, newKey(t), mesh)
	member.expect(relayproto.TypePeerPresent, other.key)
	other.send(member.key, "after")
	if f := member.expect(relayproto.TypeRecv, other.key); string(f.Payload) != "after" {
		t.Fatalf("member got %q", f.Payload)
	}
}

// TestV1ClientTold: a client of protocol v1 offers only the v1 subprotocol.
// The relay lets it in to send one Error frame, in place of the ServerHello
// the client waits for, naming the version, then closes. A v1 client shows
// an Error frame received during its handshake as the relay's message.
func TestV1ClientTold(t *testing.T) {
	r := newRelay(t, relayserver.Config{})
	before := metric(t, r, `plurenet_relay_handshakes_total{result="bad_version"}`)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, r.url, &websocket.DialOptions{Subprotocols: []string{relayproto.SubprotocolV1}})
	if err != nil {
		t.Fatalf("a v1 client's upgrade was refused: %v", err)
	}
	defer ws.CloseNow()
	if ws.Subprotocol() != relayproto.SubprotocolV1 {
		t.Fatalf("relay chose %q for a v1 client", ws.Subprotocol())
	}
	b, err := readMsg(t, ws)
	if err != nil {
		t.Fatalf("v1 client read nothing: %v", err)
	}
	f, err := relayproto.Parse(b)
	if err != nil || f.Type != relayproto.TypeError || f.Code != relayproto.ErrBadVersion {
		t.Fatalf("v1 client's first frame %x (%v), want Error %v", b, err, relayproto.ErrBadVersion)
	}
	if !strings.Contains(f.Message, relayproto.Subprotocol) || !strings.Contains(f.Message, "upgrade plurenet") {
		t.Fatalf("message %q does not name the version and say to upgrade", f.Message)
	}
	if fs := expectClose(t, ws, 0, websocket.StatusProtocolError); len(fs) != 0 {
		t.Fatalf("frames after the Error: %+v", fs)
	}
	eventually(t, "handshake metric", func() bool {
		return metric(t, r, `plurenet_relay_handshakes_total{result="bad_version"}`) == before+1
	})
}
