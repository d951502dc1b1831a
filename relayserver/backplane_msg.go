package relayserver

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/plures/plurenet/internal/relayproto"
)

// instanceID names one relay instance on the backplane. It is random per
// process start: a restarted instance is a new one, and whatever its
// predecessor left in Redis expires.
type instanceID [16]byte

func newInstanceID() (instanceID, error) {
	var id instanceID
	if _, err := rand.Read(id[:]); err != nil {
		return id, fmt.Errorf("relayserver: backplane: instance id: %w", err)
	}
	return id, nil
}

func (id instanceID) String() string { return hex.EncodeToString(id[:]) }

// Backplane messages travel between instances over Redis pub/sub. Layout:
//
//	version (1) ‖ type (1) ‖ origin instance (16) ‖ rendezvous (32) ‖ body
//
// with the body, by type:
//
//	join, leave:  key (32)
//	unicast:      destination key (32) ‖ Recv frame (relayproto)
//	broadcast:    BroadcastRecv frame (relayproto)
//
// The frames are the ones the receiving instance queues as they are, so
// forwarding costs no re-encoding; they are checked with relayproto.Parse
// like anything else read from the network.
const (
	bpVersion = 1

	bpJoin      byte = 1
	bpLeave     byte = 2
	bpUnicast   byte = 3
	bpBroadcast byte = 4

	bpHeaderSize = 1 + 1 + len(instanceID{}) + relayproto.RendezvousSize
	bpKeyMsgSize = bpHeaderSize + relayproto.KeySize
	// bpMaxMessage is the largest valid message: a unicast header, key and
	// a full-size Recv frame.
	bpMaxMessage = bpHeaderSize + relayproto.KeySize + relayproto.MaxFrame
)

var errBadBackplaneMessage = errors.New("relayserver: bad backplane message")

// bpMessage is a decoded backplane message. Frame aliases the input.
type bpMessage struct {
	typ    byte
	origin instanceID
	rv     relayproto.Rendezvous
	key    relayproto.Key // join, leave: subject; unicast: destination; broadcast: source
	frame  []byte         // unicast: Recv; broadcast: BroadcastRecv
}

func appendBPHeader(b []byte, typ byte, origin instanceID, rv relayproto.Rendezvous) []byte {
	b = append(b, bpVersion, typ)
	b = append(b, origin[:]...)
	return append(b, rv[:]...)
}

// appendBPKey appends a join or leave message.
func appendBPKey(b []byte, typ byte, origin instanceID, rv relayproto.Rendezvous, key relayproto.Key) []byte {
	b = appendBPHeader(b, typ, origin, rv)
	return append(b, key[:]...)
}

// appendBPUnicast appends a unicast message carrying frame (a Recv frame).
func appendBPUnicast(b []byte, origin instanceID, rv relayproto.Rendezvous, dst relayproto.Key, frame []byte) []byte {
	b = appendBPHeader(b, bpUnicast, origin, rv)
	b = append(b, dst[:]...)
	return append(b, frame...)
}

// appendBPBroadcast appends a broadcast message carrying frame (a
// BroadcastRecv frame).
func appendBPBroadcast(b []byte, origin instanceID, rv relayproto.Rendezvous, frame []byte) []byte {
	b = appendBPHeader(b, bpBroadcast, origin, rv)
	return append(b, frame...)
}

// parseBPMessage decodes and checks a backplane message. Redis is shared
// infrastructure, not a trusted peer: anything that can PUBLISH there can
// send us bytes, so every size and frame is checked as network input.
func parseBPMessage(b []byte) (bpMessage, error) {
	var m bpMessage
	if len(b) < bpHeaderSize {
		return m, fmt.Errorf("%w: %d bytes, shorter than a header", errBadBackplaneMessage, len(b))
	}
	if len(b) > bpMaxMessage {
		return m, fmt.Errorf("%w: %d bytes, over %d", errBadBackplaneMessage, len(b), bpMaxMessage)
	}
	if b[0] != bpVersion {
		return m, fmt.Errorf("%w: version %d", errBadBackplaneMessage, b[0])
	}
	m.typ = b[1]
	copy(m.origin[:], b[2:])
	copy(m.rv[:], b[2+len(m.origin):])
	body := b[bpHeaderSize:]
	switch m.typ {
	case bpJoin, bpLeave:
		if len(body) != relayproto.KeySize {
			return m, fmt.Errorf("%w: presence body of %d bytes", errBadBackplaneMessage, len(body))
		}
		copy(m.key[:], body)
	case bpUnicast:
		if len(body) < relayproto.KeySize {
			return m, fmt.Errorf("%w: unicast without destination", errBadBackplaneMessage)
		}
		copy(m.key[:], body)
		m.frame = body[relayproto.KeySize:]
		f, err := relayproto.Parse(m.frame)
		if err != nil {
			return m, fmt.Errorf("%w: unicast frame: %w", errBadBackplaneMessage, err)
		}
		if f.Type != relayproto.TypeRecv {
			return m, fmt.Errorf("%w: unicast carries %v, want Recv", errBadBackplaneMessage, f.Type)
		}
	case bpBroadcast:
		m.frame = body
		f, err := relayproto.Parse(m.frame)
		if err != nil {
			return m, fmt.Errorf("%w: broadcast frame: %w", errBadBackplaneMessage, err)
		}
		if f.Type != relayproto.TypeBroadcastRecv {
			return m, fmt.Errorf("%w: broadcast carries %v, want BroadcastRecv", errBadBackplaneMessage, f.Type)
		}
		m.key = f.Key
	default:
		return m, fmt.Errorf("%w: type %d", errBadBackplaneMessage, m.typ)
	}
	return m, nil
}
