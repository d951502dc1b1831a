package portmap

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"golang.org/x/net/ipv4"
)

// SSDP (UPnP Device Architecture 1.1, section 1.3): the search is written
// here rather than through goupnp's ssdp package, which keeps every answer
// from anyone until its deadline; ours drops answers that do not come
// from the gateway before parsing them and stops at the first good one.
const (
	ssdpGroup = "239.255.255.250:1900"
	// ssdpMX is the MX of the search: devices answer within this many
	// seconds (at random, to spread answers); 1 is the minimum.
	ssdpMX = 1
	// ssdpMaxDatagrams bounds what one search reads, whoever sends it.
	ssdpMaxDatagrams = 64
	// ssdpMaxAnswer is the read buffer: an answer is a few headers.
	ssdpMaxAnswer = 2048
)

// igdTargets are searched for: an IGDv2 device answers searches for v1
// too, but some v1-only devices answer only those.
var igdTargets = []string{
	"urn:schemas-upnp-org:device:InternetGatewayDevice:2",
	"urn:schemas-upnp-org:device:InternetGatewayDevice:1",
}

// ssdpSearch multicasts M-SEARCH for an Internet Gateway Device on the
// gateway's link (TTL 1) and returns the description URL the gateway
// answers with. Answers from other hosts, and URLs that point anywhere but
// the gateway, are ignored.
func ssdpSearch(ctx context.Context, gw Gateway, dst netip.AddrPort) (*url.URL, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: gw.Self.AsSlice()})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	p := ipv4.NewPacketConn(c)
	// One hop: SSDP is link-local, and we want only our gateway.
	_ = p.SetMulticastTTL(1)
	if ifi := interfaceOf(gw.Self); ifi != nil {
		_ = p.SetMulticastInterface(ifi)
	}
	if !dst.IsValid() {
		dst = netip.MustParseAddrPort(ssdpGroup)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(d)
	}
	for range 2 { // UDP: one loss should not hide the gateway
		for _, st := range igdTargets {
			msg := "M-SEARCH * HTTP/1.1\r\nHOST: " + ssdpGroup + "\r\nMAN: \"ssdp:discover\"\r\n" +
				fmt.Sprintf("MX: %d\r\nST: %s\r\n\r\n", ssdpMX, st)
			if _, err := c.WriteToUDPAddrPort([]byte(msg), dst); err != nil {
				return nil, fmt.Errorf("sending SSDP search: %w", err)
			}
		}
	}
	buf := make([]byte, ssdpMaxAnswer)
	var why error = fmt.Errorf("no answer from %s", gw.Addr)
	for range ssdpMaxDatagrams {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || isTimeout(err) {
				return nil, fmt.Errorf("SSDP: %w", why)
			}
			return nil, fmt.Errorf("SSDP: %w", err)
		}
		if from.Addr().Unmap() != gw.Addr {
			continue
		}
		loc, err := parseSSDPAnswer(buf[:n], gw.Addr)
		if err != nil {
			why = err
			continue
		}
		return loc, nil
	}
	return nil, fmt.Errorf("SSDP: more than %d datagrams and none usable: %w", ssdpMaxDatagrams, why)
}

// parseSSDPAnswer returns the description URL of a search answer, which
// must be plain HTTP on the gateway's own address.
func parseSSDPAnswer(b []byte, gw netip.Addr) (*url.URL, error) {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		return nil, fmt.Errorf("gateway's SSDP answer: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("gateway's SSDP answer: status %s", resp.Status)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return nil, fmt.Errorf("gateway's SSDP answer: location: %w", err)
	}
	if err := onGateway(loc, gw); err != nil {
		return nil, fmt.Errorf("gateway's SSDP answer: %w", err)
	}
	return loc, nil
}

// onGateway checks that u is an http URL on the gateway's own address, the
// only host port mapping ever talks to.
func onGateway(u *url.URL, gw netip.Addr) error {
	if u.Scheme != "http" {
		return fmt.Errorf("URL %q: want http://", u)
	}
	a, err := netip.ParseAddr(u.Hostname())
	if err != nil || a.Unmap() != gw {
		return fmt.Errorf("URL %q is not on the gateway %s", u, gw)
	}
	return nil
}

// interfaceOf returns the interface that has address a, or nil.
func interfaceOf(a netip.Addr) *net.Interface {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	for i := range ifs {
		addrs, err := ifs[i].Addrs()
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			if n, ok := ad.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
					return &ifs[i]
				}
			}
		}
	}
	return nil
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
