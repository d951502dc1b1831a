package filter

import (
	"log/slog"
	"net/netip"
	"testing"
)

// FuzzFilter hands arbitrary bytes from the mesh to a Device with a
// policy: it must never panic, and whatever it lets through must parse as
// an IP packet.
func FuzzFilter(f *testing.F) {
	ours := pkt{src: self4, dst: out4, proto: protoUDP, sport: 5353, dport: 9999}
	for _, p := range []pkt{
		{src: dev4, dst: self4, proto: protoTCP, sport: 40000, dport: 22, flags: flagSYN},
		{src: dev6, dst: self6, proto: protoTCP, sport: 40000, dport: 22, flags: flagSYN},
		ours.reply(0),
		{src: out4, dst: self4, proto: protoICMP, icmpType: icmp4Unreachable, quote: ours.bytes()},
		{src: out6, dst: self6, proto: protoICMPv6, icmpType: icmp6Echo, id: 3},
		{src: out6, dst: self6, proto: protoUDP, fragOffset: 1},
	} {
		f.Add(p.bytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		inner := &fakeTUN{toMesh: [][]byte{ours.bytes()}}
		d := New(inner, slog.New(slog.DiscardHandler))
		d.SetPolicy(staticPolicy{netip.MustParseAddr(dev4): true})
		d.Read([][]byte{make([]byte, 2048)}, []int{0}, 0)
		d.Write([][]byte{append([]byte(nil), b...)}, 0)
		for _, got := range inner.delivered {
			if _, ok := parse(got, false); !ok {
				t.Fatalf("delivered a packet that does not parse: %x", got)
			}
		}
		// Bytes as sent by this node: tracking must not panic either.
		inner.toMesh = [][]byte{b}
		d.Read([][]byte{make([]byte, 65536)}, []int{0}, 0)
	})
}
