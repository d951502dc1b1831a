package relayproto

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseRoundTrip(t *testing.T) {
	v := loadVectorKeys(t)
	k := v.client.Public()
	tests := []struct {
		name string
		in   []byte
		want Frame
	}{
		{"send", AppendSend(nil, k, []byte("x")), Frame{Type: TypeSend, Key: k, Payload: []byte("x")}},
		{"send empty", AppendSend(nil, k, nil), Frame{Type: TypeSend, Key: k, Payload: []byte{}}},
		{"recv", AppendRecv(nil, k, []byte("yz")), Frame{Type: TypeRecv, Key: k, Payload: []byte("yz")}},
		{"broadcast", AppendBroadcast(nil, []byte("b")), Frame{Type: TypeBroadcast, Payload: []byte("b")}},
		{"broadcast recv", AppendBroadcastRecv(nil, k, []byte("b")), Frame{Type: TypeBroadcastRecv, Key: k, Payload: []byte("b")}},
		{"present", AppendPeerPresent(nil, k), Frame{Type: TypePeerPresent, Key: k}},
		{"gone", AppendPeerGone(nil, k), Frame{Type: TypePeerGone, Key: k}},
		{"error", AppendError(nil, ErrRateLimited, "slow down"), Frame{Type: TypeError, Code: ErrRateLimited, Message: "slow down"}},
		{"drain", AppendDrain(nil, 1234), Frame{Type: TypeDrain, Millis: 1234}},
		{"leave", AppendLeave(nil), Frame{Type: TypeLeave}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != tt.want.Type || got.Key != tt.want.Key || !bytes.Equal(got.Payload, tt.want.Payload) ||
				got.Code != tt.want.Code || got.Message != tt.want.Message || got.Millis != tt.want.Millis {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	v := loadVectorKeys(t)
	k := v.client.Public()
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"unknown type", []byte{0x7f}, ErrType},
		{"handshake type after handshake", (&Welcome{}).Append(nil), ErrType},
		{"send without key", []byte{byte(TypeSend), 1, 2}, ErrShort},
		{"present short", AppendPeerPresent(nil, k)[:10], ErrShort},
		{"present long", append(AppendPeerPresent(nil, k), 0), ErrLong},
		{"drain long", append(AppendDrain(nil, 1), 0), ErrLong},
		{"leave long", []byte{byte(TypeLeave), 0}, ErrLong},
		{"error short", []byte{byte(TypeError), 0}, ErrShort},
		{"error not utf8", []byte{byte(TypeError), 0, 1, 0xff}, ErrUTF8},
		{"error too long", append([]byte{byte(TypeError), 0, 1}, bytes.Repeat([]byte("a"), MaxErrorMessage+1)...), ErrLong},
		{"too large", AppendSend(nil, k, make([]byte, MaxPayload+1)), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse(tt.in); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestParseMaxPayloadAccepted(t *testing.T) {
	k := loadVectorKeys(t).client.Public()
	f, err := Parse(AppendSend(nil, k, make([]byte, MaxPayload)))
	if err != nil || len(f.Payload) != MaxPayload {
		t.Fatalf("max payload: len %d, err %v", len(f.Payload), err)
	}
}

func TestHelloRejects(t *testing.T) {
	v := loadVectorKeys(t)
	sh := (&ServerHello{Version: Version, ServerKey: v.server.Public()}).Append(nil)
	if _, err := ParseServerHello(sh[:len(sh)-1]); !errors.Is(err, ErrShort) {
		t.Fatalf("short ServerHello: %v", err)
	}
	if _, err := ParseServerHello(append(sh, 0)); !errors.Is(err, ErrLong) {
		t.Fatalf("long ServerHello: %v", err)
	}
	if _, err := ParseClientHello(sh); !errors.Is(err, ErrType) {
		t.Fatalf("ServerHello as ClientHello: %v", err)
	}
	if _, err := ParseWelcome(nil); !errors.Is(err, ErrShort) {
		t.Fatalf("empty Welcome: %v", err)
	}
}

func TestAppendErrorTruncates(t *testing.T) {
	msg := strings.Repeat("é", MaxErrorMessage) // 2 bytes a rune
	f, err := Parse(AppendError(nil, ErrBadFrame, msg))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Message) > MaxErrorMessage || !strings.HasPrefix(msg, f.Message) {
		t.Fatalf("message not cut at a rune boundary: %d bytes", len(f.Message))
	}
}
