package relayserver

import (
	"bytes"
	"errors"
	"testing"

	"github.com/plures/plurenet/internal/relayproto"
)

func TestBackplaneMessages(t *testing.T) {
	var origin instanceID
	origin[0] = 0xaa
	var rv relayproto.Rendezvous
	rv[0] = 0xbb
	var k, dst relayproto.Key
	k[0], dst[0] = 0xcc, 0xdd
	recv := relayproto.AppendRecv(nil, k, []byte("hi"))
	brecv := relayproto.AppendBroadcastRecv(nil, k, []byte("all"))
	big := relayproto.AppendRecv(nil, k, make([]byte, relayproto.MaxPayload))
	valid := []struct {
		name string
		msg  []byte
		want bpMessage
	}{
		{"join", appendBPKey(nil, bpJoin, origin, rv, k), bpMessage{typ: bpJoin, origin: origin, rv: rv, key: k}},
		{"leave", appendBPKey(nil, bpLeave, origin, rv, k), bpMessage{typ: bpLeave, origin: origin, rv: rv, key: k}},
		{"unicast", appendBPUnicast(nil, origin, rv, dst, recv), bpMessage{typ: bpUnicast, origin: origin, rv: rv, key: dst, frame: recv}},
		{"unicast of a full payload", appendBPUnicast(nil, origin, rv, dst, big), bpMessage{typ: bpUnicast, origin: origin, rv: rv, key: dst, frame: big}},
		{"broadcast", appendBPBroadcast(nil, origin, rv, brecv), bpMessage{typ: bpBroadcast, origin: origin, rv: rv, key: k, frame: brecv}},
	}
	for _, c := range valid {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseBPMessage(c.msg)
			if err != nil {
				t.Fatal(err)
			}
			if got.typ != c.want.typ || got.origin != c.want.origin || got.rv != c.want.rv || got.key != c.want.key || !bytes.Equal(got.frame, c.want.frame) {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
	bad := []struct {
		name string
		msg  []byte
	}{
		{"empty", nil},
		{"header only", appendBPHeader(nil, bpJoin, origin, rv)},
		{"version 2", append([]byte{2}, appendBPKey(nil, bpJoin, origin, rv, k)[1:]...)},
		{"unknown type", appendBPKey(nil, 9, origin, rv, k)},
		{"join too long", append(appendBPKey(nil, bpJoin, origin, rv, k), 0)},
		{"unicast without key", appendBPHeader(nil, bpUnicast, origin, rv)},
		{"unicast of a Send", appendBPUnicast(nil, origin, rv, dst, relayproto.AppendSend(nil, k, nil))},
		{"unicast of garbage", appendBPUnicast(nil, origin, rv, dst, []byte{0x11, 1, 2})},
		{"broadcast of a Recv", appendBPBroadcast(nil, origin, rv, recv)},
		{"broadcast of nothing", appendBPHeader(nil, bpBroadcast, origin, rv)},
		{"oversized", appendBPUnicast(nil, origin, rv, dst, append(big, 0))},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			if _, err := parseBPMessage(c.msg); !errors.Is(err, errBadBackplaneMessage) {
				t.Fatalf("err = %v, want errBadBackplaneMessage", err)
			}
		})
	}
}

func TestParseSyncReply(t *testing.T) {
	key := string(make([]byte, relayproto.KeySize))
	inst := string(make([]byte, 16))
	for _, c := range []struct {
		name string
		v    any
		ok   bool
	}{
		{"empty", []any{[]any{}, []any{}}, true},
		{"one", []any{[]any{key, inst}, []any{}}, true},
		{"one refused", []any{[]any{}, []any{key}}, true},
		{"not a list", "x", false},
		{"flat list", []any{key, inst}, false},
		{"three lists", []any{[]any{}, []any{}, []any{}}, false},
		{"odd", []any{[]any{key}, []any{}}, false},
		{"short key", []any{[]any{"k", inst}, []any{}}, false},
		{"short instance", []any{[]any{key, "i"}, []any{}}, false},
		{"not strings", []any{[]any{int64(1), inst}, []any{}}, false},
		{"short refused key", []any{[]any{}, []any{"k"}}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := parseSyncReply(c.v)
			if (err == nil) != c.ok {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

// FuzzParseBackplaneMessage: whatever arrives on a backplane channel, the
// parser returns a message or an error, never panics, and a message it
// accepts has a frame relayproto accepts too.
func FuzzParseBackplaneMessage(f *testing.F) {
	var origin instanceID
	var rv relayproto.Rendezvous
	var k relayproto.Key
	f.Add(appendBPKey(nil, bpJoin, origin, rv, k))
	f.Add(appendBPKey(nil, bpLeave, origin, rv, k))
	f.Add(appendBPUnicast(nil, origin, rv, k, relayproto.AppendRecv(nil, k, []byte("x"))))
	f.Add(appendBPBroadcast(nil, origin, rv, relayproto.AppendBroadcastRecv(nil, k, []byte("y"))))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseBPMessage(b)
		if err != nil {
			return
		}
		if m.frame != nil {
			if _, err := relayproto.Parse(m.frame); err != nil {
				t.Fatalf("accepted a message whose frame does not parse: %v", err)
			}
		}
	})
}
