package direct

import (
	"fmt"
	"io"
	"net"

	"golang.org/x/net/ipv4"

	"github.com/plures/plurenet/internal/nodekey"
)

// transportsBatch is the most messages one sendmmsg carries; the device
// never passes more than conn.IdealBatchSize datagrams.
const transportsBatch = 128

// sendBatch is the messages of one SendBatch, pooled so the hot path does
// not allocate them.
type sendBatch struct {
	ms     []ipv4.Message
	oob    [][]byte // per message, room for one UDP_SEGMENT control message
	counts []int    // datagrams carried by each message
}

func newSendBatch() *sendBatch {
	sb := &sendBatch{
		ms:     make([]ipv4.Message, transportsBatch),
		oob:    make([][]byte, transportsBatch),
		counts: make([]int, transportsBatch),
	}
	back := make([]byte, transportsBatch*segCmsgSize)
	for i := range sb.oob {
		sb.oob[i] = back[i*segCmsgSize : (i+1)*segCmsgSize : (i+1)*segCmsgSize]
	}
	return sb
}

// fill turns pkts, all to one address, into messages, and returns how
// many messages and how many of pkts they carry. With gso, each run of
// datagrams of one size becomes one segmented message whose buffers are
// the datagrams themselves (the kernel gathers them: no copy). A shorter
// datagram may end a run, as the kernel's last segment may be short; a
// longer one starts the next. A run is bounded by gsoMaxSegments and by
// the largest UDP payload.
func (sb *sendBatch) fill(pkts [][]byte, to *net.UDPAddr, gso bool) (msgs, used int) {
	for used < len(pkts) && msgs < len(sb.ms) {
		size := len(pkts[used])
		end := used + 1
		if gso && size > 0 {
			total := size
			for end < len(pkts) && end-used < gsoMaxSegments {
				l := len(pkts[end])
				if l > size || l == 0 || total+l > maxUDPPayload4 {
					break
				}
				total += l
				end++
				if l < size {
					break
				}
			}
		}
		m := &sb.ms[msgs]
		m.Buffers = pkts[used:end:end]
		m.Addr = to
		m.OOB = nil
		if end-used > 1 {
			m.OOB = putSegmentSize(sb.oob[msgs], uint16(size))
		}
		sb.counts[msgs] = end - used
		msgs++
		used = end
	}
	return msgs, used
}

// release drops references to packets so a pooled batch does not keep the
// device's buffers alive.
func (sb *sendBatch) release(n int) {
	for i := range sb.ms[:n] {
		sb.ms[i].Buffers, sb.ms[i].Addr, sb.ms[i].OOB = nil, nil, nil
	}
}

// SendBatch sends WireGuard packets to peer on its direct path in as few
// system calls as the kernel allows: with UDP segmentation offload, each
// run of same-size packets is one segmented message, and the messages go
// in one sendmmsg.
func (t *Transport) SendBatch(peer nodekey.Public, pkts [][]byte) error {
	p := t.peer(peer)
	if p == nil {
		return fmt.Errorf("direct: peer %s: %w", peer.ShortString(), ErrNoDirectPath)
	}
	now := t.now()
	path := p.livePath(now)
	if path == nil {
		return fmt.Errorf("direct: peer %s: %w", peer.ShortString(), ErrNoDirectPath)
	}
	p.noteSend(path, now)
	sb := t.batchPool.Get().(*sendBatch)
	defer t.batchPool.Put(sb)
	if err := t.write(sb, pkts, path.udpAddr); err != nil {
		return fmt.Errorf("direct: sending to %s: %w", path.addr, err)
	}
	return nil
}

// write sends pkts to one address. A segmented message the kernel refuses
// is sent again datagram by datagram (see gsoFailed), and when the refusal
// means the socket can never segment, segmentation is turned off for good.
func (t *Transport) write(sb *sendBatch, pkts [][]byte, to *net.UDPAddr) error {
	plain := 0 // datagrams at the head of pkts to send one by one
	for len(pkts) > 0 {
		batch, gso := pkts, plain == 0 && t.gso.Load()
		if plain > 0 {
			batch = pkts[:plain]
		}
		n, used := sb.fill(batch, to, gso)
		sent, err := t.writeMsgs(sb.ms[:n])
		done := 0
		for _, c := range sb.counts[:sent] {
			done += c
		}
		segmented := err != nil && sent < n && sb.counts[sent] > 1
		sb.release(n)
		pkts = pkts[done:]
		plain = max(0, plain-done)
		if err == nil {
			continue
		}
		retry, disable := gsoFailed(err)
		if !segmented || !retry {
			return err
		}
		if disable && t.gso.CompareAndSwap(true, false) {
			t.log.Warn("direct: UDP segmentation offload refused; sending datagrams one by one", "err", err)
		}
		plain = used - done
	}
	return nil
}

// writeMsgs sends messages with sendmmsg until all are sent or one fails,
// and returns how many were sent.
func (t *Transport) writeMsgs(ms []ipv4.Message) (int, error) {
	if !batchWrites {
		return t.writeEach(ms)
	}
	sent := 0
	for sent < len(ms) {
		k, err := t.pc.WriteBatch(ms[sent:], 0)
		if err != nil {
			return sent, err
		}
		if k <= 0 {
			return sent, io.ErrShortWrite
		}
		sent += k
	}
	return sent, nil
}

// writeEach sends messages of one datagram each, one call per message: the
// way x/net sends a batch where there is no sendmmsg, but through Go's
// socket, which writes an IPv4 destination on a dual-stack socket in the
// IPv4-mapped form macOS and Windows require (x/net writes an IPv4
// sockaddr, which only Linux accepts on an IPv6 socket).
func (t *Transport) writeEach(ms []ipv4.Message) (int, error) {
	for i := range ms {
		ua, ok := ms[i].Addr.(*net.UDPAddr)
		if !ok || len(ms[i].Buffers) != 1 {
			return i, fmt.Errorf("direct: unsendable message to %v", ms[i].Addr)
		}
		if _, err := t.udp.WriteToUDPAddrPort(ms[i].Buffers[0], ua.AddrPort()); err != nil {
			return i, err
		}
	}
	return len(ms), nil
}
