package relay

import (
	"bytes"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/relayproto"
)

func key(b byte) nodekey.Public { return nodekey.Public{b} }

// drain returns every pending presence change as "+k" / "-k".
func drainPresence(p *presence) []string {
	var out []string
	for {
		m, ok := p.next()
		if !ok {
			return out
		}
		sign := "+"
		if m.Kind == KindPeerGone {
			sign = "-"
		}
		out = append(out, sign+string('a'+rune(m.From[0])))
	}
}

func TestPresence(t *testing.T) {
	type op struct {
		kind  string // begin, settle, present, gone, next
		epoch uint64
		k     byte
	}
	tests := []struct {
		name      string
		ops       []op
		want      []string // changes reported at the end
		wantPeers []byte
	}{
		{
			name:      "joins and leaves",
			ops:       []op{{"begin", 1, 0}, {"present", 1, 1}, {"present", 1, 2}, {"gone", 1, 1}},
			want:      []string{"+c"},
			wantPeers: []byte{2},
		},
		{
			name: "a flap the consumer did not see is no change",
			ops: []op{{"begin", 1, 0}, {"present", 1, 1}, {"next", 0, 0},
				{"gone", 1, 1}, {"present", 1, 1}},
			want:      nil,
			wantPeers: []byte{1},
		},
		{
			name:      "own key is not a peer",
			ops:       []op{{"begin", 1, 0}, {"present", 1, 9}},
			want:      nil,
			wantPeers: nil,
		},
		{
			name: "reconnect reports only what changed",
			ops: []op{{"begin", 1, 0}, {"present", 1, 1}, {"present", 1, 2}, {"next", 0, 0}, {"next", 0, 0},
				{"begin", 2, 0}, {"present", 2, 2}, {"present", 2, 3}, {"settle", 2, 0}},
			want:      []string{"+d", "-b"},
			wantPeers: []byte{2, 3},
		},
		{
			name: "old connection's presence is ignored",
			ops: []op{{"begin", 1, 0}, {"present", 1, 1}, {"begin", 2, 0}, {"present", 2, 1},
				{"gone", 1, 1}, {"present", 1, 4}, {"settle", 2, 0}},
			want:      []string{"+b"},
			wantPeers: []byte{1},
		},
		{
			name: "settle of an old epoch does nothing",
			ops: []op{{"begin", 1, 0}, {"present", 1, 1}, {"next", 0, 0}, {"begin", 2, 0},
				{"settle", 1, 0}},
			want:      nil,
			wantPeers: []byte{1},
		},
		{
			name:      "gone of an unknown key is ignored",
			ops:       []op{{"begin", 1, 0}, {"gone", 1, 5}},
			want:      nil,
			wantPeers: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPresence(key(9))
			for _, o := range tt.ops {
				switch o.kind {
				case "begin":
					p.begin(o.epoch)
				case "settle":
					p.settle(o.epoch)
				case "present":
					p.present(o.epoch, key(o.k))
				case "gone":
					p.gone(o.epoch, key(o.k))
				case "next":
					p.next()
				}
			}
			if got := drainPresence(p); !slices.Equal(got, tt.want) {
				t.Errorf("changes = %v, want %v", got, tt.want)
			}
			var peers []byte
			for _, k := range p.peers() {
				peers = append(peers, k[0])
			}
			slices.Sort(peers)
			if !slices.Equal(peers, tt.wantPeers) {
				t.Errorf("peers = %v, want %v", peers, tt.wantPeers)
			}
		})
	}
}

func TestPresenceBounded(t *testing.T) {
	p := newPresence(key(0))
	p.begin(1)
	var k nodekey.Public
	for i := range maxPeers + 10 {
		k[0], k[1], k[2] = byte(i), byte(i>>8), 1
		p.present(1, k)
	}
	if n := len(p.peers()); n != maxPeers {
		t.Fatalf("%d peers, want the bound %d", n, maxPeers)
	}
	if p.overflow != 10 {
		t.Fatalf("overflow = %d, want 10", p.overflow)
	}
	// A relay flapping ever-new keys at a consumer that never reads must not
	// grow the change list without bound.
	p = newPresence(key(0))
	p.begin(1)
	for i := range 10 * maxPeers {
		k[0], k[1], k[2] = byte(i), byte(i>>8), byte(i>>16)
		p.present(1, k)
		p.gone(1, k)
	}
	if len(p.dirty) > maxDirty {
		t.Fatalf("change list grew to %d, bound %d", len(p.dirty), maxDirty)
	}
	if got := drainPresence(p); len(got) != 0 {
		t.Fatalf("%d changes reported for keys that came and went unseen", len(got))
	}
}

// fuzzClient is a client with no connection, enough to run conn.handle.
func fuzzClient() (*Client, *conn) {
	c := &Client{
		cfg:      Config{URL: "ws://127.0.0.1/v1/relay"},
		log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		data:     make(chan Message, 4),
		presence: newPresence(key(0)),
	}
	c.presence.begin(1)
	return c, &conn{c: c, id: 1, planned: make(chan planReason, 1)}
}

// FuzzHandleFrame feeds arbitrary relay bytes to the client's frame handler:
// it must not panic, must reject what does not parse or only clients send,
// and must hand Recv a copy of the payload, never the read buffer.
func FuzzHandleFrame(f *testing.F) {
	k := key(7)
	for _, seed := range [][]byte{
		relayproto.AppendRecv(nil, k, []byte("payload")),
		relayproto.AppendBroadcastRecv(nil, k, []byte("b")),
		relayproto.AppendPeerPresent(nil, k),
		relayproto.AppendPeerGone(nil, k),
		relayproto.AppendError(nil, relayproto.ErrRateLimited, "slow down"),
		relayproto.AppendError(nil, relayproto.ErrAuthFailed, "no"),
		relayproto.AppendError(nil, relayproto.ErrServerShutdown, "bye"),
		relayproto.AppendDrain(nil, 5000),
		relayproto.AppendSend(nil, k, []byte("x")),
		relayproto.AppendLeave(nil),
		{0xff},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, cn := fuzzClient()
		in := bytes.Clone(b)
		settled := false
		_, err := cn.handle(in, nil, &settled)
		fr, perr := relayproto.Parse(b)
		if perr != nil {
			if err == nil {
				t.Fatalf("unparsable frame accepted")
			}
			return
		}
		switch fr.Type {
		case relayproto.TypeSend, relayproto.TypeBroadcast, relayproto.TypeLeave:
			if err == nil {
				t.Fatalf("client-only frame %v accepted", fr.Type)
			}
		case relayproto.TypeRecv, relayproto.TypeBroadcastRecv:
			if err != nil {
				t.Fatalf("data frame rejected: %v", err)
			}
			for i := range in {
				in[i] ^= 0xff
			}
			m := <-c.data
			if m.From != fr.Key || !bytes.Equal(m.Payload, fr.Payload) {
				t.Fatalf("delivered message does not match the frame (or aliases the buffer)")
			}
		}
	})
}

// TestPresenceConfirmed: after a reconnect, has keeps a key the new
// connection has not confirmed yet, confirmed does not; the new
// connection's PeerPresent confirms it, and settle drops what it did not.
func TestPresenceConfirmed(t *testing.T) {
	p := newPresence(key(0))
	p.begin(1)
	p.present(1, key(1))
	p.present(1, key(2))
	p.settle(1)
	if !p.confirmed(key(1)) || !p.has(key(1)) {
		t.Fatal("a key the connection announced is not confirmed")
	}
	p.begin(2) // a reconnect
	if !p.has(key(1)) || p.confirmed(key(1)) {
		t.Fatalf("after a reconnect: has %v confirmed %v; want true, false", p.has(key(1)), p.confirmed(key(1)))
	}
	p.present(2, key(1))
	p.settle(2)
	if !p.confirmed(key(1)) {
		t.Fatal("a key the new connection announced is not confirmed")
	}
	if p.has(key(2)) || p.confirmed(key(2)) || p.confirmed(key(3)) {
		t.Fatal("a key the new connection did not announce is still there")
	}
}
