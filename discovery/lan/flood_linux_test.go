package lan

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/plures/plurenet/discovery"
)

// TestFloodSparesMembers (issue 9 item 6): an outsider floods the group
// from 50 source addresses; a member whose sending socket the node vouched
// for (its announcements opened) still gets every message through. With
// one rate limit for all sources (the code before this test), the flood
// took it all and the member's announcements were dropped.
func TestFloodSparesMembers(t *testing.T) {
	const (
		flooders   = 50
		floodEach  = 10
		memberMsgs = 5
	)
	group := testGroup()
	member, memberAddr := groupSender(t, 2)
	fromMember := make(chan []byte, memberMsgs)
	d, err := New(Config{Group: group, Interfaces: []string{"lo"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	err = d.Start(context.Background(), discovery.Sink{Sealed: func(from netip.AddrPort, msg []byte) {
		if from == memberAddr {
			fromMember <- msg
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.Vouch(memberAddr)

	// accounted waits until the reader has seen n datagrams: paced so,
	// the flood never overflows the socket's small receive buffer.
	accounted := func(n uint64) {
		t.Helper()
		deadline := time.Now().Add(wait)
		for st := d.Stats(); st.Received+st.DropsRate < n; st = d.Stats() {
			if time.Now().After(deadline) {
				t.Fatalf("reader accounted for %d of %d datagrams: %+v", st.Received+st.DropsRate, n, st)
			}
			time.Sleep(time.Millisecond)
		}
	}
	dst := net.UDPAddrFromAddrPort(group)
	garbage := sealedLike(200, 0xEE)
	for i := range flooders {
		c, _ := groupSender(t, byte(10+i))
		for range floodEach {
			if _, err := c.WriteTo(garbage, dst); err != nil {
				t.Fatal(err)
			}
		}
		accounted(uint64((i + 1) * floodEach))
	}
	var sent [][]byte
	for i := range memberMsgs {
		msg := sealedLike(300, byte(i))
		sent = append(sent, msg)
		if _, err := member.WriteTo(msg, dst); err != nil {
			t.Fatal(err)
		}
	}
	const total = flooders*floodEach + memberMsgs
	accounted(total)
	if d.Stats().DropsRate == 0 {
		t.Fatalf("a flood of %d datagrams was not limited: %+v", total-memberMsgs, d.Stats())
	}
	for i := range memberMsgs {
		select {
		case got := <-fromMember:
			if !bytes.Equal(got, sent[i]) {
				t.Fatalf("member message %d: got another", i)
			}
		default:
			t.Fatalf("only %d of the member's %d messages got through the flood: %+v", i, memberMsgs, d.Stats())
		}
	}
}
