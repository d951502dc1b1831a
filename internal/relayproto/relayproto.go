// Package relayproto is the wire format of plurenet relay protocol v2, shared
// by the relay server and the relay client: the frames, and the handshake
// proofs (admission.go) by which a client shows that it holds its node key
// and the mesh's admission key. docs/protocol.md is its specification; the
// vectors there are checked by this package's tests.
//
// Every WebSocket binary message is exactly one frame: a one-byte type
// followed by a body whose layout the type fixes. WebSocket already delimits
// messages, so frames carry no length of their own.
package relayproto

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/plures/plurenet/internal/nodekey"
)

// Subprotocol is the WebSocket subprotocol a v2 client offers and a v2 relay
// selects. A relay that does not select it speaks another version.
const Subprotocol = "plurenet-relay.v2"

// SubprotocolV1 is the previous version's subprotocol. Nobody speaks v1 any
// more; it is named so that each side can recognise an old peer and say so
// in one clear error instead of a bare refusal (docs/protocol.md §1.1).
const SubprotocolV1 = "plurenet-relay.v1"

// Path is the HTTP path of the relay's WebSocket endpoint. Its "v1" names
// the endpoint, not the protocol version: keeping it lets an old client
// reach the relay and be told to upgrade.
const Path = "/v1/relay"

// Version is the protocol version carried in the hello frames.
const Version = 2

// Size limits. A WireGuard data packet is at most MTU+32 bytes and a sealed
// announcement a few hundred, so 64 KiB leaves room without letting one
// message pin much relay memory.
const (
	KeySize          = nodekey.Size
	RendezvousSize   = 32
	ChallengeSize    = 32
	MACSize          = sha256.Size
	AdmissionKeySize = ed25519.PublicKeySize
	SignatureSize    = ed25519.SignatureSize
	MaxPayload       = 64 << 10
	MaxFrame         = 1 + KeySize + MaxPayload
	MaxErrorMessage  = 200
	serverHelloSize  = 1 + 1 + 1 + KeySize + ChallengeSize
	clientHelloSize  = 1 + 1 + KeySize + AdmissionKeySize + RendezvousSize + MACSize + SignatureSize
	welcomeSize      = 1 + 4 + 4 + 4
	keyFrameSize     = 1 + KeySize
	drainSize        = 1 + 4
	errorHeaderSize  = 1 + 2
	leaveSize        = 1
	acceptSize       = 1
	batchLenSize     = 2
	dataHeaderSize   = 1 + KeySize
	broadcastHdrSize = 1
)

// FrameOverhead is what the relay's byte-rate limit charges for each frame it
// queues on top of the frame's length: about the TCP/IP, TLS and WebSocket
// headers one frame costs on the wire, and a fair share of the per-write CPU
// that dominates for small frames. A client pacing itself to the rate in the
// Welcome charges it too. A frame to n receivers (a Broadcast) is charged n
// times; see Charge.
const FrameOverhead = 64

// Charge is what the relay's rate limit takes for a frame of frameLen bytes
// (as the relay queues it) delivered to receivers members: receivers copies,
// each frameLen plus FrameOverhead. A frame that reaches no one is charged
// as one copy, so that sending into an empty rendezvous is not free.
func Charge(frameLen, receivers int) int {
	return max(receivers, 1) * (frameLen + FrameOverhead)
}

// Type is a frame's first byte.
type Type byte

// Frame types. The direction is fixed per type; a frame received in the wrong
// direction is a protocol error.
const (
	TypeServerHello   Type = 0x01 // relay → client: version, flags, relay key, challenge
	TypeClientHello   Type = 0x02 // client → relay: version, client key, admission key, rendezvous, MAC, signature
	TypeWelcome       Type = 0x03 // relay → client: limits in force
	TypeSend          Type = 0x10 // client → relay: destination key, payload
	TypeRecv          Type = 0x11 // relay → client: source key, payload
	TypeBroadcast     Type = 0x12 // client → relay: payload to every other member of the rendezvous
	TypeBroadcastRecv Type = 0x13 // relay → client: source key, broadcast payload
	TypeSendBatch     Type = 0x14 // client → relay: destination key, packets (each a 2-byte length and its bytes)
	TypeRecvBatch     Type = 0x15 // relay → client: source key, packets
	TypePeerPresent   Type = 0x20 // relay → client: a key joined the rendezvous
	TypePeerGone      Type = 0x21 // relay → client: a key left the rendezvous
	TypeError         Type = 0x30 // relay → client: code, message
	TypeDrain         Type = 0x31 // relay → client: reconnect elsewhere within the deadline
	TypeLeave         Type = 0x32 // client → relay: stop routing to this connection, flush, close
	TypeAcceptBatches Type = 0x33 // client → relay: send RecvBatch frames to this connection
)

// FlagBatches, in ServerHello.Flags, says that the relay takes SendBatch
// and AcceptBatches frames. A client sends neither to a relay that does
// not set it, and a relay sends RecvBatch only to a connection that sent
// AcceptBatches, so peers that know nothing of batches are unaffected.
const FlagBatches byte = 0x01

func (t Type) String() string {
	switch t {
	case TypeServerHello:
		return "ServerHello"
	case TypeClientHello:
		return "ClientHello"
	case TypeWelcome:
		return "Welcome"
	case TypeSend:
		return "Send"
	case TypeRecv:
		return "Recv"
	case TypeBroadcast:
		return "Broadcast"
	case TypeBroadcastRecv:
		return "BroadcastRecv"
	case TypePeerPresent:
		return "PeerPresent"
	case TypePeerGone:
		return "PeerGone"
	case TypeError:
		return "Error"
	case TypeDrain:
		return "Drain"
	case TypeLeave:
		return "Leave"
	case TypeSendBatch:
		return "SendBatch"
	case TypeRecvBatch:
		return "RecvBatch"
	case TypeAcceptBatches:
		return "AcceptBatches"
	}
	return fmt.Sprintf("Type(0x%02x)", byte(t))
}

// ErrorCode is carried in an Error frame. A relay closes the connection after
// sending any code marked fatal below.
type ErrorCode uint16

// Error codes.
const (
	ErrBadFrame       ErrorCode = 1 // fatal: a frame did not parse or came in the wrong direction
	ErrFrameTooLarge  ErrorCode = 2 // fatal: a frame exceeded MaxFrame
	ErrAuthFailed     ErrorCode = 3 // fatal: a ClientHello proof (MAC, admission signature, rendezvous) did not verify
	ErrBadVersion     ErrorCode = 4 // fatal: the client speaks another protocol version
	ErrTooManyConns   ErrorCode = 5 // fatal: the key already holds the maximum connections
	ErrRateLimited    ErrorCode = 6 // not fatal: frames were dropped for exceeding the rate limit
	ErrHandshakeSlow  ErrorCode = 7 // fatal: the handshake did not finish in time
	ErrServerShutdown ErrorCode = 8 // fatal: the relay is stopping
	ErrIdle           ErrorCode = 9 // fatal: nothing heard within the idle timeout
	// ErrRendezvousFull: fatal: the rendezvous holds the relay's maximum
	// number of member keys and the joiner's key is not one of them.
	ErrRendezvousFull ErrorCode = 10
)

func (c ErrorCode) String() string {
	switch c {
	case ErrBadFrame:
		return "bad frame"
	case ErrFrameTooLarge:
		return "frame too large"
	case ErrAuthFailed:
		return "authentication failed"
	case ErrBadVersion:
		return "unsupported protocol version"
	case ErrTooManyConns:
		return "too many connections for this key"
	case ErrRateLimited:
		return "rate limited"
	case ErrHandshakeSlow:
		return "handshake timeout"
	case ErrServerShutdown:
		return "relay shutting down"
	case ErrIdle:
		return "idle timeout"
	case ErrRendezvousFull:
		return "rendezvous full"
	}
	return fmt.Sprintf("error %d", uint16(c))
}

// Fatal reports whether the relay closes the connection after this code.
func (c ErrorCode) Fatal() bool { return c != ErrRateLimited }

// Decoding errors.
var (
	ErrShort    = errors.New("relayproto: frame too short")
	ErrLong     = errors.New("relayproto: frame longer than its type allows")
	ErrTooLarge = fmt.Errorf("relayproto: frame larger than %d bytes", MaxFrame)
	ErrType     = errors.New("relayproto: unexpected frame type")
	ErrUTF8     = errors.New("relayproto: error message is not UTF-8")
	ErrBatch    = errors.New("relayproto: batch packets do not fill the frame (an empty packet, or a length past its end)")
)

// Key is a node's X25519 public key.
type Key = nodekey.Public

// Rendezvous is the 32-byte hash that groups the members of one mesh on a
// relay: the hash of the mesh's admission public key (RendezvousOf).
type Rendezvous [RendezvousSize]byte

// ServerHello opens the handshake.
type ServerHello struct {
	Version   byte
	Flags     byte // FlagBatches; a client ignores unknown bits
	ServerKey Key
	Challenge [ChallengeSize]byte
}

// Append appends the encoded frame to b.
func (h *ServerHello) Append(b []byte) []byte {
	b = append(b, byte(TypeServerHello), h.Version, h.Flags)
	b = append(b, h.ServerKey[:]...)
	return append(b, h.Challenge[:]...)
}

// ParseServerHello decodes a ServerHello frame.
func ParseServerHello(b []byte) (ServerHello, error) {
	var h ServerHello
	if err := expect(b, TypeServerHello, serverHelloSize, true); err != nil {
		return h, err
	}
	h.Version, h.Flags = b[1], b[2]
	copy(h.ServerKey[:], b[3:])
	copy(h.Challenge[:], b[3+KeySize:])
	return h, nil
}

// ClientHello answers the challenge. MAC proves that the client holds the
// private half of ClientKey, Signature that it holds the mesh's admission key
// (and so the mesh secret); NewClientHello builds one, Verify checks one.
type ClientHello struct {
	Version    byte
	ClientKey  Key
	Admission  AdmissionPublic
	Rendezvous Rendezvous
	MAC        [MACSize]byte
	Signature  [SignatureSize]byte
}

// Append appends the encoded frame to b.
func (h *ClientHello) Append(b []byte) []byte {
	b = append(b, byte(TypeClientHello), h.Version)
	b = append(b, h.ClientKey[:]...)
	b = append(b, h.Admission[:]...)
	b = append(b, h.Rendezvous[:]...)
	b = append(b, h.MAC[:]...)
	return append(b, h.Signature[:]...)
}

// ParseClientHello decodes a ClientHello frame. It checks the layout only;
// Verify checks the version and the proofs.
func ParseClientHello(b []byte) (ClientHello, error) {
	var h ClientHello
	if err := expect(b, TypeClientHello, clientHelloSize, true); err != nil {
		return h, err
	}
	h.Version = b[1]
	b = b[2:]
	b = b[copy(h.ClientKey[:], b):]
	b = b[copy(h.Admission[:], b):]
	b = b[copy(h.Rendezvous[:], b):]
	b = b[copy(h.MAC[:], b):]
	copy(h.Signature[:], b)
	return h, nil
}

// Welcome completes the handshake and tells the client the limits in force.
type Welcome struct {
	MaxPayload   uint32 // largest payload the relay forwards
	RateBytes    uint32 // sustained bytes per second accepted from this connection; 0 = unlimited
	LifetimeSecs uint32 // seconds before the relay drains this connection; 0 = unlimited
}

// Append appends the encoded frame to b.
func (w *Welcome) Append(b []byte) []byte {
	b = append(b, byte(TypeWelcome))
	b = binary.BigEndian.AppendUint32(b, w.MaxPayload)
	b = binary.BigEndian.AppendUint32(b, w.RateBytes)
	return binary.BigEndian.AppendUint32(b, w.LifetimeSecs)
}

// ParseWelcome decodes a Welcome frame.
func ParseWelcome(b []byte) (Welcome, error) {
	var w Welcome
	if err := expect(b, TypeWelcome, welcomeSize, true); err != nil {
		return w, err
	}
	w.MaxPayload = binary.BigEndian.Uint32(b[1:])
	w.RateBytes = binary.BigEndian.Uint32(b[5:])
	w.LifetimeSecs = binary.BigEndian.Uint32(b[9:])
	return w, nil
}

// AppendSend appends a Send frame (client → relay) to b.
func AppendSend(b []byte, dst Key, payload []byte) []byte {
	return appendKeyed(b, TypeSend, dst, payload)
}

// AppendRecv appends a Recv frame (relay → client) to b.
func AppendRecv(b []byte, src Key, payload []byte) []byte {
	return appendKeyed(b, TypeRecv, src, payload)
}

// Forwarded turns a Send or SendBatch frame, in place, into the Recv or
// RecvBatch frame that delivers it from src, and returns it. Each pair
// differs only in the type and the key, so a relay forwards a frame without
// copying it. f must be a frame Parse accepted as a Send or SendBatch.
func Forwarded(f []byte, src Key) []byte {
	f[0]++ // TypeSend+1 == TypeRecv, TypeSendBatch+1 == TypeRecvBatch
	copy(f[1:1+KeySize], src[:])
	return f
}

// BatchSize is the most a client puts in one batch frame, header included:
// a dozen full-size WireGuard packets, enough to take the per-message
// cost off the profile, while a relay forwards the frame in one pooled
// buffer without copying it. A relay takes batch frames up to MaxFrame.
const BatchSize = 16 << 10

// MaxBatchPacket is the longest packet a batch frame carries: its length
// is two bytes. A longer one goes in a Send of its own.
const MaxBatchPacket = 0xffff

// AppendSendBatch appends the header of a SendBatch frame to dst; packets
// follow with AppendBatchPacket.
func AppendSendBatch(b []byte, dst Key) []byte {
	return appendKeyed(b, TypeSendBatch, dst, nil)
}

// AppendBatchPacket appends one packet of a batch frame: its length (two
// bytes, big-endian) and its bytes. pkt must hold 1 to MaxBatchPacket bytes.
func AppendBatchPacket(b []byte, pkt []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(pkt)))
	return append(b, pkt...)
}

// BatchPacketSize is what a packet of n bytes adds to a batch frame.
func BatchPacketSize(n int) int { return batchLenSize + n }

// NextPacket splits the first packet off the packets of a batch frame
// that Parse accepted (Frame.Payload): it returns the packet and the rest,
// which is empty after the last. The packet aliases the frame.
func NextPacket(packets []byte) (pkt, rest []byte) {
	n := batchLenSize + int(binary.BigEndian.Uint16(packets))
	return packets[batchLenSize:n], packets[n:]
}

// countBatch checks the packets of a batch frame: at least one, each
// non-empty, the last ending where the frame ends.
func countBatch(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		if len(b) < batchLenSize {
			return 0, ErrBatch
		}
		l := int(binary.BigEndian.Uint16(b))
		if l == 0 || len(b) < batchLenSize+l {
			return 0, ErrBatch
		}
		b = b[batchLenSize+l:]
		n++
	}
	if n == 0 {
		return 0, ErrBatch
	}
	return n, nil
}

// BatchCharge is what the relay's rate limit takes for a batch frame with
// these packets (Frame.Payload), to one receiver: each packet as if it were
// a Send of its own (Charge), so that batching changes nothing in what a
// member may send.
func BatchCharge(packets []byte) int {
	c := 0
	for len(packets) > 0 {
		var p []byte
		p, packets = NextPacket(packets)
		c += Charge(dataHeaderSize+len(p), 1)
	}
	return c
}

// AppendAcceptBatches appends an AcceptBatches frame to b.
func AppendAcceptBatches(b []byte) []byte { return append(b, byte(TypeAcceptBatches)) }

// AppendBroadcastRecv appends a BroadcastRecv frame (relay → client) to b.
func AppendBroadcastRecv(b []byte, src Key, payload []byte) []byte {
	return appendKeyed(b, TypeBroadcastRecv, src, payload)
}

// AppendBroadcast appends a Broadcast frame (client → relay) to b.
func AppendBroadcast(b []byte, payload []byte) []byte {
	b = append(b, byte(TypeBroadcast))
	return append(b, payload...)
}

// AppendPeerPresent appends a PeerPresent frame to b.
func AppendPeerPresent(b []byte, k Key) []byte { return appendKeyed(b, TypePeerPresent, k, nil) }

// AppendPeerGone appends a PeerGone frame to b.
func AppendPeerGone(b []byte, k Key) []byte { return appendKeyed(b, TypePeerGone, k, nil) }

// AppendLeave appends a Leave frame to b.
func AppendLeave(b []byte) []byte { return append(b, byte(TypeLeave)) }

// AppendDrain appends a Drain frame to b. deadlineMillis is how long the relay
// keeps serving this connection before it closes it.
func AppendDrain(b []byte, deadlineMillis uint32) []byte {
	b = append(b, byte(TypeDrain))
	return binary.BigEndian.AppendUint32(b, deadlineMillis)
}

// AppendError appends an Error frame to b. A message longer than
// MaxErrorMessage is cut at a rune boundary.
func AppendError(b []byte, code ErrorCode, msg string) []byte {
	for len(msg) > MaxErrorMessage {
		_, size := utf8.DecodeLastRuneInString(msg)
		msg = msg[:len(msg)-size]
	}
	if !utf8.ValidString(msg) {
		msg = "invalid message"
	}
	b = append(b, byte(TypeError))
	b = binary.BigEndian.AppendUint16(b, uint16(code))
	return append(b, msg...)
}

func appendKeyed(b []byte, t Type, k Key, payload []byte) []byte {
	b = append(b, byte(t))
	b = append(b, k[:]...)
	return append(b, payload...)
}

// Frame is a decoded post-handshake frame. Payload aliases the input buffer.
type Frame struct {
	Type    Type
	Key     Key       // Send, SendBatch: destination; Recv, RecvBatch, BroadcastRecv: source; PeerPresent, PeerGone: subject
	Payload []byte    // Send, Recv, Broadcast, BroadcastRecv; SendBatch, RecvBatch: the packets, read with NextPacket
	Count   int       // SendBatch, RecvBatch: how many packets
	Code    ErrorCode // Error
	Message string    // Error
	Millis  uint32    // Drain: deadline
}

// Parse decodes any post-handshake frame. It checks sizes and encoding but
// not direction: the relay and the client each reject types that must not
// reach them.
func Parse(b []byte) (Frame, error) {
	var f Frame
	if len(b) == 0 {
		return f, ErrShort
	}
	if len(b) > MaxFrame {
		return f, ErrTooLarge
	}
	f.Type = Type(b[0])
	switch f.Type {
	case TypeSend, TypeRecv, TypeBroadcastRecv:
		if len(b) < dataHeaderSize {
			return f, ErrShort
		}
		copy(f.Key[:], b[1:])
		f.Payload = b[dataHeaderSize:]
	case TypeBroadcast:
		f.Payload = b[broadcastHdrSize:]
	case TypePeerPresent, TypePeerGone:
		if err := exactLen(b, keyFrameSize); err != nil {
			return f, err
		}
		copy(f.Key[:], b[1:])
	case TypeError:
		if len(b) < errorHeaderSize {
			return f, ErrShort
		}
		if len(b) > errorHeaderSize+MaxErrorMessage {
			return f, ErrLong
		}
		if !utf8.Valid(b[errorHeaderSize:]) {
			return f, ErrUTF8
		}
		f.Code = ErrorCode(binary.BigEndian.Uint16(b[1:]))
		f.Message = string(b[errorHeaderSize:])
	case TypeDrain:
		if err := exactLen(b, drainSize); err != nil {
			return f, err
		}
		f.Millis = binary.BigEndian.Uint32(b[1:])
	case TypeSendBatch, TypeRecvBatch:
		if len(b) < dataHeaderSize {
			return f, ErrShort
		}
		copy(f.Key[:], b[1:])
		f.Payload = b[dataHeaderSize:]
		n, err := countBatch(f.Payload)
		if err != nil {
			return f, err
		}
		f.Count = n
	case TypeLeave:
		if err := exactLen(b, leaveSize); err != nil {
			return f, err
		}
	case TypeAcceptBatches:
		if err := exactLen(b, acceptSize); err != nil {
			return f, err
		}
	default:
		return f, fmt.Errorf("%w: %v", ErrType, f.Type)
	}
	return f, nil
}

func expect(b []byte, t Type, size int, exact bool) error {
	if len(b) == 0 {
		return ErrShort
	}
	if Type(b[0]) != t {
		return fmt.Errorf("%w: got %v, want %v", ErrType, Type(b[0]), t)
	}
	if exact {
		return exactLen(b, size)
	}
	return nil
}

func exactLen(b []byte, n int) error {
	switch {
	case len(b) < n:
		return ErrShort
	case len(b) > n:
		return ErrLong
	}
	return nil
}
