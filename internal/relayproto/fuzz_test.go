package relayproto

import (
	"bytes"
	"testing"
)

// FuzzParse feeds arbitrary relay bytes to every decoder. None may panic, and
// a frame that parses must re-encode to the same bytes.
func FuzzParse(f *testing.F) {
	v := loadVectorKeys(f)
	k := v.client.Public()
	for _, seed := range [][]byte{
		(&ServerHello{Version: Version, ServerKey: k}).Append(nil),
		(&ClientHello{Version: Version, ClientKey: k}).Append(nil),
		unhex(f, vecClientHello),
		(&Welcome{MaxPayload: MaxPayload}).Append(nil),
		AppendSend(nil, k, []byte("payload")),
		AppendRecv(nil, k, nil),
		AppendBroadcast(nil, []byte("b")),
		AppendBroadcastRecv(nil, k, []byte("b")),
		AppendPeerPresent(nil, k),
		AppendPeerGone(nil, k),
		AppendError(nil, ErrBadFrame, "x"),
		AppendDrain(nil, 1),
		AppendLeave(nil),
		AppendAcceptBatches(nil),
		AppendBatchPacket(AppendBatchPacket(AppendSendBatch(nil, k), []byte("one")), []byte("two")),
		Forwarded(AppendBatchPacket(AppendSendBatch(nil, k), []byte("x")), k),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := ParseServerHello(b); err == nil && !bytes.Equal(h.Append(nil), b) {
			t.Fatalf("ServerHello does not round-trip")
		}
		if h, err := ParseClientHello(b); err == nil && !bytes.Equal(h.Append(nil), b) {
			t.Fatalf("ClientHello does not round-trip")
		}
		if w, err := ParseWelcome(b); err == nil && !bytes.Equal(w.Append(nil), b) {
			t.Fatalf("Welcome does not round-trip")
		}
		fr, err := Parse(b)
		if err != nil {
			return
		}
		var re []byte
		switch fr.Type {
		case TypeSend:
			re = AppendSend(nil, fr.Key, fr.Payload)
		case TypeRecv:
			re = AppendRecv(nil, fr.Key, fr.Payload)
		case TypeBroadcast:
			re = AppendBroadcast(nil, fr.Payload)
		case TypeBroadcastRecv:
			re = AppendBroadcastRecv(nil, fr.Key, fr.Payload)
		case TypePeerPresent:
			re = AppendPeerPresent(nil, fr.Key)
		case TypePeerGone:
			re = AppendPeerGone(nil, fr.Key)
		case TypeError:
			re = AppendError(nil, fr.Code, fr.Message)
		case TypeDrain:
			re = AppendDrain(nil, fr.Millis)
		case TypeLeave:
			re = AppendLeave(nil)
		case TypeAcceptBatches:
			re = AppendAcceptBatches(nil)
		case TypeSendBatch, TypeRecvBatch:
			re = AppendSendBatch(nil, fr.Key)
			n := 0
			for rest := fr.Payload; len(rest) > 0; n++ {
				var p []byte
				p, rest = NextPacket(rest)
				if len(p) == 0 {
					t.Fatal("batch with an empty packet parsed")
				}
				re = AppendBatchPacket(re, p)
			}
			if n != fr.Count || n == 0 {
				t.Fatalf("batch of %d packets parsed as %d", n, fr.Count)
			}
			if fr.Type == TypeRecvBatch {
				re = Forwarded(re, fr.Key)
			}
		default:
			t.Fatalf("Parse accepted unknown type %v", fr.Type)
		}
		if !bytes.Equal(re, b) {
			t.Fatalf("%v does not round-trip:\n got %x\nwant %x", fr.Type, re, b)
		}
	})
}

// FuzzVerifyClientHello feeds arbitrary bytes to the relay's ClientHello
// check, seeded with a valid hello. Nothing may panic, and nothing but the
// valid hello itself may pass: a mutation of any byte breaks one of its
// proofs.
func FuzzVerifyClientHello(f *testing.F) {
	v := loadVectorKeys(f)
	sh := v.serverHello()
	valid := unhex(f, vecClientHello)
	f.Add(valid)
	f.Add((&ClientHello{Version: Version}).Append(nil))
	f.Add(valid[:len(valid)-1])
	f.Fuzz(func(t *testing.T, b []byte) {
		ch, err := ParseClientHello(b)
		if err != nil {
			return
		}
		if err := ch.Verify(v.server, sh); err == nil && !bytes.Equal(b, valid) {
			t.Fatalf("forged hello %x passed", b)
		}
	})
}
