package filter

import (
	"log/slog"
	"net/netip"
	"testing"
)

// nullTUN takes every batch and hands out the same batch of packets.
type nullTUN struct {
	fakeTUN
	out [][]byte
}

func (n *nullTUN) Write(bufs [][]byte, _ int) (int, error) { return len(bufs), nil }
func (n *nullTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for i := range bufs {
		sizes[i] = copy(bufs[i][offset:], n.out[i%len(n.out)])
	}
	return len(bufs), nil
}

const benchBatch = 128 // conn.IdealBatchSize

// staticPolicy is a policy that costs what a map lookup and a rule walk
// cost, like the node's.
type staticPolicy map[netip.Addr]bool

func (s staticPolicy) Allows(src netip.Addr, proto uint8, port uint16) bool {
	return s[src] && (proto != protoTCP || port == 22)
}
func (s staticPolicy) Denied(netip.Addr) {}

func benchBufs(p pkt) [][]byte {
	bufs := make([][]byte, benchBatch)
	for i := range bufs {
		b := p.bytes()
		bufs[i] = append(make([]byte, testOffset), b...)
	}
	return bufs
}

// BenchmarkFilterWrite measures the inbound check per packet: packets of
// a flow this node opened (a table hit), and SYNs the policy decides. The
// baseline is the same batch through a Device without a policy.
func BenchmarkFilterWrite(b *testing.B) {
	ours := pkt{src: self4, dst: out4, proto: protoTCP, sport: 50000, dport: 8000, flags: flagSYN}
	for _, bc := range []struct {
		name   string
		policy bool
		in     pkt
	}{
		{"no-policy", false, ours.reply(flagACK)},
		{"flow-hit", true, ours.reply(flagACK)},
		{"policy-allow", true, pkt{src: dev4, dst: self4, proto: protoTCP, sport: 40000, dport: 22, flags: flagSYN}},
		{"policy-deny", true, pkt{src: dev4, dst: self4, proto: protoTCP, sport: 40000, dport: 23, flags: flagSYN}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			inner := &nullTUN{out: [][]byte{ours.bytes()}}
			d := New(inner, slog.New(slog.DiscardHandler))
			if bc.policy {
				d.SetPolicy(staticPolicy{netip.MustParseAddr(dev4): true})
			}
			rb, sizes := benchBufs(ours), make([]int, benchBatch)
			d.Read(rb[:1], sizes[:1], testOffset)
			bufs := benchBufs(bc.in)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				d.Write(bufs, testOffset)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/packet")
		})
	}
}

// BenchmarkFilterRead measures the outbound tracking per packet (a TCP
// data packet of a flow this node opened: a table refresh).
func BenchmarkFilterRead(b *testing.B) {
	ours := pkt{src: self4, dst: out4, proto: protoTCP, sport: 50000, dport: 8000, flags: flagSYN}
	inner := &nullTUN{out: [][]byte{ours.bytes(), pkt{src: self4, dst: out4, proto: protoTCP, sport: 50000, dport: 8000, flags: flagACK}.bytes()}}
	d := New(inner, slog.New(slog.DiscardHandler))
	d.SetPolicy(staticPolicy{})
	bufs, sizes := benchBufs(ours), make([]int, benchBatch)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		d.Read(bufs, sizes, testOffset)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/packet")
}
