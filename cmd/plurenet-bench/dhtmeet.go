//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/plures/plurenet/internal/netlab"
)

// Settings of the first-byte rows.
const (
	// benchDHTNodes is the size of the bench's private DHT, as in the
	// lab test.
	benchDHTNodes = 8
	benchDHTPort  = 6881
	// firstBytePort is where the receiving member's namespace serves one
	// byte over TCP (on every address, so on its overlay IP once it has
	// one).
	firstBytePort = 9100
	// firstByteWait bounds one first-byte measurement.
	firstByteWait = 60 * time.Second
	// dialTimeout bounds one dial attempt; a member not met yet is retried.
	dialTimeout = 500 * time.Millisecond
)

// firstByteRows measures, side by side, the time from starting two
// members behind two home NATs to the first byte of a TCP connection
// between their overlay IPs:
//
//	(i) swarm mode, meeting through a private DHT of 8 dht-nodes (no relay);
//	(j) relay mode, meeting through the relay.
func (b *bench) firstByteRows(lab *netlab.Lab) []*row {
	i := &row{section: sectionLab, label: "(i) swarm + DHT: 2 NATed nodes started until first TCP byte"}
	j := &row{section: sectionLab, label: "(j) relay: 2 NATed nodes started until first TCP byte"}
	var ps procs
	defer func() { ps.stop() }() // the processes appended below, not the empty list of now
	var boot []string
	for k := range benchDHTNodes {
		h := lab.Host(fmt.Sprintf("dht%d", k), lab.Internet())
		bs := "none"
		if k > 0 {
			bs = boot[0]
		}
		p := h.Start(context.Background(), b.cfg.plurenet, "dht-node", "--listen", fmt.Sprintf("0.0.0.0:%d", benchDHTPort), "--bootstrap", bs)
		ps = append(ps, &namedProc{name: h.Name(), p: p})
		if err := waitOutput(p, "plurenet dht-node listening on"); err != nil {
			i.err = err
			break
		}
		boot = append(boot, netip.AddrPortFrom(h.Addr(), benchDHTPort).String())
	}
	if i.err == nil {
		var members procs
		i.note, i.err = b.firstByte(&members, "", "--transport", "swarm", "--lan-discovery", "off", "--dht-bootstrap", strings.Join(boot, ","))
		members.stop() // the TUN name is reused by row (j)
	}
	rp, url, err := b.startRelay()
	ps = append(ps, rp)
	if err != nil {
		j.err = err
	} else {
		var members procs
		j.note, j.err = b.firstByte(&members, url, "--transport", "relay")
		members.stop()
	}
	return []*row{i, j}
}

// firstByte starts a kernel-TUN member on b.a and one on b.b with args
// (and relayURL unless ""), and returns how long after both started a's
// first TCP byte from b arrived.
func (b *bench) firstByte(ps *procs, relayURL string, args ...string) (string, error) {
	var ln net.Listener
	if err := b.b.Do(func() (err error) {
		ln, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", firstBytePort))
		return err
	}); err != nil {
		return "", err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte{1})
			c.Close()
		}
	}()
	started := time.Now()
	args = append([]string{"--tun", tunName}, args...)
	na, err := b.startNode(b.a, relayURL, args...)
	if err != nil {
		return "", err
	}
	*ps = append(*ps, &na.namedProc)
	nb, err := b.startNode(b.b, relayURL, args...)
	if err != nil {
		return "", err
	}
	*ps = append(*ps, &nb.namedProc)
	deadline := started.Add(firstByteWait)
	var dst netip.Addr
	for time.Now().Before(deadline) {
		if !dst.IsValid() {
			if st, err := b.status(nb); err == nil {
				dst, _ = netip.ParseAddr(st.IPv4)
			}
			if !dst.IsValid() {
				time.Sleep(poll / 4)
				continue
			}
		}
		var got bool
		_ = b.a.Do(func() error {
			c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(dst, firstBytePort).String(), dialTimeout)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(dialTimeout))
			var one [1]byte
			if n, _ := c.Read(one[:]); n == 1 {
				got = true
			}
			return nil
		})
		if got {
			return fmt.Sprintf("%v (issue target 5 s)", time.Since(started).Round(time.Millisecond)), nil
		}
	}
	return "", fmt.Errorf("no TCP byte within %v", firstByteWait)
}
