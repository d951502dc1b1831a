package relayserver

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/relayproto"
)

func fuzzKey(b byte) relayproto.Key {
	var k relayproto.Key
	for i := range k {
		k[i] = b
	}
	return k
}

// FuzzHandleFrame feeds arbitrary client bytes to the relay's frame dispatch,
// with a sender and one peer joined in a rendezvous. Nothing may panic, and
// whatever reaches the peer must be a well-formed relay→client frame within
// MaxFrame; a valid Send to the peer must arrive intact, and so must the
// packets of a valid SendBatch: as one RecvBatch if the peer accepts batch
// frames (it does for inputs of odd length), else one Recv each.
func FuzzHandleFrame(f *testing.F) {
	s, err := New(Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	src, dst := fuzzKey(1), fuzzKey(2)
	for _, seed := range [][]byte{
		relayproto.AppendSend(nil, dst, []byte("payload")),
		relayproto.AppendBatchPacket(relayproto.AppendBatchPacket(relayproto.AppendSendBatch(nil, dst), []byte("one")), []byte("two!")),
		relayproto.AppendBatchPacket(relayproto.AppendSendBatch(nil, dst), []byte("x")),
		relayproto.AppendSendBatch(nil, dst),
		relayproto.AppendAcceptBatches(nil),
		relayproto.AppendSend(nil, fuzzKey(3), []byte("nobody")),
		relayproto.AppendBroadcast(nil, []byte("all")),
		relayproto.AppendLeave(nil),
		relayproto.AppendRecv(nil, dst, nil),
		relayproto.AppendDrain(nil, 5),
		relayproto.AppendError(nil, relayproto.ErrIdle, "x"),
		{0x7f},
		{},
	} {
		// Full-size frames are left to the unit tests: inputs of 64 KiB
		// slow the fuzzing engine to a crawl.
		f.Add(seed)
	}
	rv := relayproto.Rendezvous{9}
	f.Fuzz(func(t *testing.T, b []byte) {
		sender, peer := s.newConn("sender"), s.newConn("peer")
		sender.key, sender.rv, peer.key, peer.rv = src, rv, dst, rv
		for _, c := range []*conn{peer, sender} {
			c.established = true
			if err := s.router.join(c, s.welcome); err != nil {
				t.Fatal(err)
			}
		}
		peer.batches.Store(len(b)%2 == 1)
		defer peer.finish(closeGone, 0, "")
		defer sender.finish(closeGone, 0, "")
		in := bytes.Clone(b)
		fr := readLike(b)
		sender.handleFrame(fr, time.Now())
		clear(b) // the relay must not hold the frame read from the socket...
		if fr.fwd != nil {
			clear(fr.fwd[:cap(fr.fwd)]) // ...nor a forward buffer it did not take
		}
		fr.release()

		var frames [][]byte
		for _, e := range peer.q.take(nil) {
			if e.snap != nil {
				t.Fatalf("peer, the first member, was queued a snapshot of %d keys", len(e.snap.keys))
			}
			frames = append(frames, e.frame)
		}
		if len(frames) < 2 || frames[0][0] != byte(relayproto.TypeWelcome) || frames[1][0] != byte(relayproto.TypePeerPresent) {
			t.Fatalf("peer's queue does not start with Welcome, PeerPresent: %x", frames)
		}
		for _, fr := range frames[2:] {
			if len(fr) > relayproto.MaxFrame {
				t.Fatalf("relay queued a %d-byte frame", len(fr))
			}
			p, err := relayproto.Parse(fr)
			if err != nil {
				t.Fatalf("relay queued a bad frame %x: %v", fr, err)
			}
			switch p.Type {
			case relayproto.TypeRecvBatch:
				if !peer.batches.Load() {
					t.Fatal("RecvBatch queued for a peer that does not accept batch frames")
				}
				fallthrough
			case relayproto.TypeRecv, relayproto.TypeBroadcastRecv, relayproto.TypePeerGone:
				if p.Key != src {
					t.Fatalf("%v names %v, want the sender", p.Type, p.Key)
				}
			default:
				t.Fatalf("relay queued %v for a peer", p.Type)
			}
		}
		if in, err := relayproto.Parse(in); err == nil && in.Type == relayproto.TypeSend && in.Key == dst {
			if len(frames) != 3 {
				t.Fatalf("valid Send to the peer: %d frames queued, want 1", len(frames)-2)
			}
			if p, _ := relayproto.Parse(frames[2]); p.Type != relayproto.TypeRecv || !bytes.Equal(p.Payload, in.Payload) {
				t.Fatalf("peer got %+v", p)
			}
		}
		if in, err := relayproto.Parse(in); err == nil && in.Type == relayproto.TypeSendBatch && in.Key == dst {
			var got [][]byte
			for _, fr := range frames[2:] {
				p, _ := relayproto.Parse(fr)
				switch {
				case p.Type == relayproto.TypeRecv && !peer.batches.Load():
					got = append(got, p.Payload)
				case p.Type == relayproto.TypeRecvBatch && len(frames) == 3:
					for rest := p.Payload; len(rest) > 0; {
						var pkt []byte
						pkt, rest = relayproto.NextPacket(rest)
						got = append(got, pkt)
					}
				default:
					t.Fatalf("valid SendBatch to the peer (accepts batches: %v): queued %v", peer.batches.Load(), p.Type)
				}
			}
			rest := in.Payload
			for i := range in.Count {
				var want []byte
				want, rest = relayproto.NextPacket(rest)
				if i >= len(got) || !bytes.Equal(got[i], want) {
					t.Fatalf("valid SendBatch of %d packets to the peer: packet %d arrived as %q of %d", in.Count, i, got, len(got))
				}
			}
			if len(got) != in.Count {
				t.Fatalf("valid SendBatch of %d packets to the peer: %d arrived", in.Count, len(got))
			}
		}
	})
}

// FuzzVerifyHello feeds arbitrary bytes to the relay's ClientHello check,
// seeded with a valid hello. No input may panic, and none but that hello
// may pass: any other needs the client's private key or the admission key.
func FuzzVerifyHello(f *testing.F) {
	s, err := New(Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	hello := relayproto.ServerHello{Version: relayproto.Version, ServerKey: s.pub, Challenge: [32]byte{1, 2, 3}}
	member, err := nodekey.NewPrivate()
	if err != nil {
		f.Fatal(err)
	}
	valid, err := relayproto.NewClientHello(hello, member, relayproto.NewAdmissionKey([32]byte{4}))
	if err != nil {
		f.Fatal(err)
	}
	validBytes := valid.Append(nil)
	f.Add(validBytes)
	f.Add((&relayproto.ClientHello{Version: relayproto.Version, ClientKey: fuzzKey(5)}).Append(nil))
	f.Add((&relayproto.ClientHello{Version: 1}).Append(nil))
	f.Add([]byte{byte(relayproto.TypeClientHello)})
	f.Fuzz(func(t *testing.T, b []byte) {
		c := s.newConn("fuzz")
		ch, perr := relayproto.ParseClientHello(b)
		code, msg, result := c.verify(ch, perr, hello)
		if code == 0 {
			if !bytes.Equal(b, validBytes) {
				t.Fatalf("forged hello %x authenticated", b)
			}
			return
		}
		if !code.Fatal() || msg == "" || result == "" {
			t.Fatalf("refusal %v %q %q", code, msg, result)
		}
	})
}
