package relayserver

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

func startSTUN(t *testing.T) (net.PacketConn, func()) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeSTUN(ctx, pc, nil) }()
	return pc, func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeSTUN: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("ServeSTUN did not return after cancel")
		}
		pc.Close()
	}
}

// TestSTUNBinding asks the responder for our address with pion's STUN
// client, as ICE does.
func TestSTUNBinding(t *testing.T) {
	pc, stop := startSTUN(t)
	defer stop()
	udp, err := net.DialUDP("udp4", nil, pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	c, err := stun.NewClient(udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got stun.XORMappedAddress
	var cbErr error
	err = c.Do(stun.MustBuild(stun.TransactionID, stun.BindingRequest), func(ev stun.Event) {
		if ev.Error != nil {
			cbErr = ev.Error
			return
		}
		if ev.Message.Type != stun.BindingSuccess {
			t.Errorf("answer type %v", ev.Message.Type)
		}
		if err := stun.Fingerprint.Check(ev.Message); err != nil {
			t.Errorf("fingerprint: %v", err)
		}
		cbErr = got.GetFrom(ev.Message)
	})
	if err != nil || cbErr != nil {
		t.Fatalf("binding: %v / %v", err, cbErr)
	}
	want := udp.LocalAddr().(*net.UDPAddr)
	if !got.IP.Equal(want.IP) || got.Port != want.Port {
		t.Fatalf("mapped %s:%d, want %s", got.IP, got.Port, want)
	}
}

func TestSTUNRespond(t *testing.T) {
	from := netip.MustParseAddrPort("203.0.113.7:40000")
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	now := time.Unix(1000, 0)
	tests := []struct {
		name string
		in   []byte
		from netip.AddrPort
		ok   bool
	}{
		{"binding request", req.Raw, from, true},
		{"binding with attributes", stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewSoftware("x"), stun.Fingerprint).Raw, from, true},
		{"ipv6 source", req.Raw, netip.MustParseAddrPort("[2001:db8::1]:5"), true},
		{"indication", stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication)).Raw, from, false},
		{"success response", stun.MustBuild(stun.TransactionID, stun.BindingSuccess).Raw, from, false},
		{"not stun", []byte("GET / HTTP/1.1\r\n\r\nxxxxxxxxxxxxx"), from, false},
		{"empty", nil, from, false},
		{"too large", append(append([]byte(nil), req.Raw...), make([]byte, stunMaxRequest)...), from, false},
		{"port zero", req.Raw, netip.MustParseAddrPort("203.0.113.7:0"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newSTUNResponder()
			resp, ok := r.respond(tt.in, tt.from, now)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if !ok {
				return
			}
			var m stun.Message
			m.Raw = append([]byte(nil), resp...)
			if err := m.Decode(); err != nil {
				t.Fatal(err)
			}
			var x stun.XORMappedAddress
			if err := x.GetFrom(&m); err != nil {
				t.Fatal(err)
			}
			if m.TransactionID != req.TransactionID && tt.name == "binding request" {
				t.Fatal("transaction id not echoed")
			}
			got, _ := netip.AddrFromSlice(x.IP)
			if got.Unmap() != tt.from.Addr() || x.Port != int(tt.from.Port()) {
				t.Fatalf("mapped %s:%d, want %s", x.IP, x.Port, tt.from)
			}
			if len(resp) > 52 {
				t.Fatalf("answer is %d bytes, documented at most 52", len(resp))
			}
		})
	}
}

// TestSTUNRateLimit: one source gets its burst, then nothing until its
// bucket refills; another source is unaffected.
func TestSTUNRateLimit(t *testing.T) {
	r := newSTUNResponder()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	a := netip.MustParseAddrPort("203.0.113.1:1000")
	b := netip.MustParseAddrPort("203.0.113.2:1000")
	now := time.Unix(1000, 0)
	answered := 0
	for range 3 * stunPerSourceBurst {
		if _, ok := r.respond(req, a, now); ok {
			answered++
		}
	}
	if answered != stunPerSourceBurst {
		t.Fatalf("answered %d of a burst, want %d", answered, stunPerSourceBurst)
	}
	if _, ok := r.respond(req, b, now); !ok {
		t.Fatal("a second source was limited by the first")
	}
	if _, ok := r.respond(req, a, now.Add(time.Second)); !ok {
		t.Fatal("source not answered after its bucket refilled")
	}
}

// TestSTUNSourceTableBounded: many sources never grow the table past its
// bound, and idle entries make room.
func TestSTUNSourceTableBounded(t *testing.T) {
	r := newSTUNResponder()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	now := time.Unix(1000, 0)
	for i := range stunMaxSources + 100 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		r.respond(req, netip.AddrPortFrom(a, 1), now)
	}
	if len(r.sources) > stunMaxSources {
		t.Fatalf("%d sources, bound %d", len(r.sources), stunMaxSources)
	}
	later := now.Add(10 * time.Second)
	if _, ok := r.respond(req, netip.MustParseAddrPort("192.0.2.1:1"), later); !ok {
		t.Fatal("new source refused although every entry is idle")
	}
	if len(r.sources) > stunMaxSources {
		t.Fatalf("%d sources, bound %d", len(r.sources), stunMaxSources)
	}
}

func FuzzSTUNRespond(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("a:b"), stun.Fingerprint).Raw)
	f.Add([]byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42})
	from := netip.MustParseAddrPort("198.51.100.1:3478")
	f.Fuzz(func(t *testing.T, b []byte) {
		r := newSTUNResponder()
		resp, ok := r.respond(b, from, time.Unix(1, 0))
		if !ok {
			return
		}
		if len(resp) > 52 {
			t.Fatalf("answer of %d bytes", len(resp))
		}
		var m stun.Message
		m.Raw = append([]byte(nil), resp...)
		if err := m.Decode(); err != nil || m.Type != stun.BindingSuccess {
			t.Fatalf("answer does not decode as Binding Success: %v", err)
		}
	})
}
