package filter

import (
	"bytes"
	"net/netip"
	"os"
	"sync"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
)

// Overlay addresses of the tests: this node, a member the policy lets in
// on tcp/22, udp/53 and ICMP, and a member it lets in nowhere.
const (
	self4, dev4, out4 = "100.64.0.1", "100.64.0.2", "100.64.0.3"
	self6, dev6, out6 = "fd00::1", "fd00::2", "fd00::3"
)

// rulePolicy lets dev reach tcp/22 and udp/53 (and so ICMP), nobody else
// anything, and counts denials by source.
type rulePolicy struct {
	mu     sync.Mutex
	denied map[netip.Addr]int
}

func (r *rulePolicy) Allows(src netip.Addr, proto uint8, port uint16) bool {
	if src != netip.MustParseAddr(dev4) && src != netip.MustParseAddr(dev6) {
		return false
	}
	switch proto {
	case protoTCP:
		return port == 22
	case protoUDP:
		return port == 53
	}
	return proto == protoICMP || proto == protoICMPv6
}

func (r *rulePolicy) Denied(src netip.Addr) {
	r.mu.Lock()
	r.denied[src]++
	r.mu.Unlock()
}

// fakeTUN is the adapter: it hands out the packets queued for Read and
// keeps what Write delivers.
type fakeTUN struct {
	toMesh    [][]byte
	delivered [][]byte
}

func (f *fakeTUN) File() *os.File           { return nil }
func (f *fakeTUN) MTU() (int, error)        { return 1280, nil }
func (f *fakeTUN) Name() (string, error)    { return "fake", nil }
func (f *fakeTUN) Events() <-chan tun.Event { return nil }
func (f *fakeTUN) Close() error             { return nil }
func (f *fakeTUN) BatchSize() int           { return 1 }
func (f *fakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		f.delivered = append(f.delivered, bytes.Clone(b[offset:]))
	}
	return len(bufs), nil
}
func (f *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	for n < len(bufs) && len(f.toMesh) > 0 {
		sizes[n] = copy(bufs[n][offset:], f.toMesh[0])
		f.toMesh = f.toMesh[1:]
		n++
	}
	return n, nil
}

const testOffset = 16

// send makes this node send p (through Read).
func send(t *testing.T, d *Device, f *fakeTUN, p pkt) {
	t.Helper()
	f.toMesh = append(f.toMesh, p.bytes())
	bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
	if n, err := d.Read(bufs, sizes, testOffset); n != 1 || err != nil {
		t.Fatalf("Read: %d, %v", n, err)
	}
}

// receive hands p from the mesh to the device and reports whether the
// adapter got it.
func receive(t *testing.T, d *Device, f *fakeTUN, p pkt) bool {
	t.Helper()
	b := p.bytes()
	buf := make([]byte, testOffset+len(b))
	copy(buf[testOffset:], b)
	before := len(f.delivered)
	if _, err := d.Write([][]byte{buf}, testOffset); err != nil {
		t.Fatal(err)
	}
	return len(f.delivered) > before
}

func TestFilter(t *testing.T) {
	ssh := pkt{src: dev4, dst: self4, proto: protoTCP, sport: 40000, dport: 22, flags: flagSYN}
	// Packets this node sends before the case's packet arrives.
	ours := pkt{src: self4, dst: out4, proto: protoTCP, sport: 50000, dport: 8000, flags: flagSYN}
	ours6 := pkt{src: self6, dst: out6, proto: protoTCP, sport: 50000, dport: 8000, flags: flagSYN}
	oursUDP := pkt{src: self4, dst: out4, proto: protoUDP, sport: 5353, dport: 9999}
	ping := pkt{src: self4, dst: out4, proto: protoICMP, icmpType: icmp4Echo, id: 7}
	ping6 := pkt{src: self6, dst: out6, proto: protoICMPv6, icmpType: icmp6Echo, id: 7}
	for _, tc := range []struct {
		name string
		sent []pkt
		in   pkt
		want bool
	}{
		{"tcp SYN to an allowed port", nil, ssh, true},
		{"tcp SYN to a denied port", nil, pkt{src: dev4, dst: self4, proto: protoTCP, sport: 40000, dport: 8000, flags: flagSYN}, false},
		{"tcp SYN from a member allowed nothing", nil, pkt{src: out4, dst: self4, proto: protoTCP, sport: 40000, dport: 22, flags: flagSYN}, false},
		{"tcp ACK with no flow to a denied port", nil, pkt{src: dev4, dst: self4, proto: protoTCP, sport: 40000, dport: 8000, flags: flagACK}, false},
		{"tcp SYN-ACK answering our connection", []pkt{ours}, ours.reply(flagSYN | flagACK), true},
		{"tcp data on our connection", []pkt{ours}, ours.reply(flagACK), true},
		{"tcp SYN-ACK from another port", []pkt{ours}, pkt{src: out4, dst: self4, proto: protoTCP, sport: 8001, dport: 50000, flags: flagSYN | flagACK}, false},
		{"tcp SYN-ACK from another member", []pkt{ours}, pkt{src: dev4, dst: self4, proto: protoTCP, sport: 8000, dport: 50000, flags: flagSYN | flagACK}, false},
		{"our SYN-ACK to an inbound connection opens nothing", []pkt{{src: self4, dst: out4, proto: protoTCP, sport: 8000, dport: 40000, flags: flagSYN | flagACK}}, pkt{src: out4, dst: self4, proto: protoTCP, sport: 40000, dport: 8000, flags: flagACK}, false},
		{"ipv6 tcp SYN to an allowed port", nil, pkt{src: dev6, dst: self6, proto: protoTCP, sport: 40000, dport: 22, flags: flagSYN}, true},
		{"ipv6 tcp SYN to a denied port", nil, pkt{src: dev6, dst: self6, proto: protoTCP, sport: 40000, dport: 23, flags: flagSYN}, false},
		{"ipv6 reply to our connection", []pkt{ours6}, ours6.reply(flagSYN | flagACK), true},
		{"udp to an allowed port", nil, pkt{src: dev4, dst: self4, proto: protoUDP, sport: 40000, dport: 53}, true},
		{"udp to a denied port", nil, pkt{src: dev4, dst: self4, proto: protoUDP, sport: 40000, dport: 54}, false},
		{"udp reply to our datagram", []pkt{oursUDP}, oursUDP.reply(0), true},
		{"udp from another port", []pkt{oursUDP}, pkt{src: out4, dst: self4, proto: protoUDP, sport: 9998, dport: 5353}, false},
		{"icmp echo from a member allowed something", nil, pkt{src: dev4, dst: self4, proto: protoICMP, icmpType: icmp4Echo, id: 1}, true},
		{"icmp echo from a member allowed nothing", nil, pkt{src: out4, dst: self4, proto: protoICMP, icmpType: icmp4Echo, id: 1}, false},
		{"icmp echo reply to our echo", []pkt{ping}, pkt{src: out4, dst: self4, proto: protoICMP, icmpType: icmp4EchoReply, id: 7}, true},
		{"icmp echo reply to no echo of ours", []pkt{ping}, pkt{src: out4, dst: self4, proto: protoICMP, icmpType: icmp4EchoReply, id: 8}, false},
		{"icmpv6 echo from a member allowed something", nil, pkt{src: dev6, dst: self6, proto: protoICMPv6, icmpType: icmp6Echo, id: 1}, true},
		{"icmpv6 echo reply to our echo", []pkt{ping6}, pkt{src: out6, dst: self6, proto: protoICMPv6, icmpType: icmp6EchoReply, id: 7}, true},
		{"icmp unreachable about our flow", []pkt{oursUDP}, pkt{src: out4, dst: self4, proto: protoICMP, icmpType: icmp4Unreachable, quote: oursUDP.bytes()}, true},
		{"icmp unreachable about our flow, from another member", []pkt{oursUDP}, pkt{src: dev4, dst: self4, proto: protoICMP, icmpType: icmp4Unreachable, quote: oursUDP.bytes()}, true}, // dev may reach us (ICMP), so the policy lets it in
		{"icmp unreachable about our flow with another member, from a member allowed nothing", []pkt{{src: self4, dst: dev4, proto: protoUDP, sport: 5353, dport: 9999}}, pkt{src: out4, dst: self4, proto: protoICMP, icmpType: icmp4Unreachable, quote: pkt{src: self4, dst: dev4, proto: protoUDP, sport: 5353, dport: 9999}.bytes()}, false},
		{"icmpv6 packet too big about our flow", []pkt{ours6}, pkt{src: out6, dst: self6, proto: protoICMPv6, icmpType: icmp6TooBig, quote: ours6.bytes()}, true},
		{"icmp unreachable about no flow", nil, pkt{src: out4, dst: self4, proto: protoICMP, icmpType: icmp4Unreachable, quote: oursUDP.bytes()}, false},
		{"another protocol from a member allowed some ports", nil, pkt{src: dev4, dst: self4, proto: 47}, false},
		{"a later fragment", nil, pkt{src: out4, dst: self4, proto: protoUDP, fragOffset: 185}, true},
		{"an ipv6 later fragment", nil, pkt{src: out6, dst: self6, proto: protoUDP, fragOffset: 185}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeTUN{}
			d := New(f, nil)
			pol := &rulePolicy{denied: make(map[netip.Addr]int)}
			d.SetPolicy(pol)
			for _, p := range tc.sent {
				send(t, d, f, p)
			}
			if got := receive(t, d, f, tc.in); got != tc.want {
				t.Fatalf("delivered %v, want %v", got, tc.want)
			}
			src := netip.MustParseAddr(tc.in.src)
			if want := map[bool]int{true: 0, false: 1}[tc.want]; pol.denied[src] != want || d.Denied() != uint64(want) {
				t.Fatalf("denials of %v: %d (device %d), want %d", src, pol.denied[src], d.Denied(), want)
			}
		})
	}
}

// Without a policy everything passes; a policy set later keeps the
// connections this node opened before it.
func TestFilterNoPolicyThenPolicy(t *testing.T) {
	f := &fakeTUN{}
	d := New(f, nil)
	ours := pkt{src: self4, dst: out4, proto: protoTCP, sport: 50000, dport: 8000, flags: flagSYN}
	send(t, d, f, ours)
	in := pkt{src: out4, dst: self4, proto: protoTCP, sport: 40000, dport: 8000, flags: flagSYN}
	if !receive(t, d, f, in) {
		t.Fatal("without a policy a packet was dropped")
	}
	d.SetPolicy(&rulePolicy{denied: make(map[netip.Addr]int)})
	if receive(t, d, f, in) {
		t.Fatal("with a policy a denied SYN passed")
	}
	if !receive(t, d, f, ours.reply(flagACK)) {
		t.Fatal("a policy set later cut a connection this node opened before it")
	}
	d.SetPolicy(nil)
	if !receive(t, d, f, in) {
		t.Fatal("after SetPolicy(nil) a packet was dropped")
	}
}

// Malformed packets are dropped, never delivered.
func TestFilterMalformed(t *testing.T) {
	syn := pkt{src: dev4, dst: self4, proto: protoTCP, sport: 40000, dport: 22, flags: flagSYN}.bytes()
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"version 5", append([]byte{0x55}, syn[1:]...)},
		{"tcp header cut short", syn[:30]},
		{"total length past the end", func() []byte { b := bytes.Clone(syn); b[3] = 200; return b }()},
		{"ipv6 ext header chain too long", func() []byte {
			p := pkt{src: dev6, dst: self6, proto: protoTCP, sport: 1, dport: 22, flags: flagSYN}.bytes()
			chain := make([]byte, 0, 8*(maxExt6+2))
			for i := 0; i < maxExt6+2; i++ {
				chain = append(chain, ext6DstOpts, 0, 0, 0, 0, 0, 0, 0)
			}
			chain[len(chain)-8] = protoTCP
			p = append(append(bytes.Clone(p[:40]), chain...), p[40:]...)
			p[6] = ext6DstOpts
			p[4], p[5] = byte((len(p)-40)>>8), byte(len(p)-40)
			return p
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeTUN{}
			d := New(f, nil)
			d.SetPolicy(&rulePolicy{denied: make(map[netip.Addr]int)})
			buf := append(make([]byte, testOffset), tc.b...)
			d.Write([][]byte{buf}, testOffset)
			if len(f.delivered) != 0 {
				t.Fatal("a malformed packet was delivered")
			}
		})
	}
}

// The flow table is bounded: a flood of flows evicts within buckets and
// the newest flow is always found.
func TestFlowTableBounded(t *testing.T) {
	ft := newFlowTable()
	var k flowKey
	for i := range 3 * flowSlots {
		k = flowKey{remote: netip.MustParseAddr(out4).As16(), local: uint16(i), rport: 80, proto: protoTCP}
		ft.add(k, int64(i+1))
		if !ft.touch(k, int64(i+1)) {
			t.Fatalf("flow %d not found right after adding it", i)
		}
	}
	live := 0
	for _, s := range ft.slots {
		if s.seen != 0 {
			live++
		}
	}
	if live > flowSlots {
		t.Fatalf("%d live slots", live)
	}
	// An idle flow expires.
	if ft.touch(k, int64(3*flowSlots)+int64(tcpIdle)+1) {
		t.Fatal("a flow idle longer than tcpIdle is still live")
	}
}
