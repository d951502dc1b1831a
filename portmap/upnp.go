package portmap

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/dcps/internetgateway2"
	"github.com/huin/goupnp/soap"
)

// UPnP IGD through github.com/huin/goupnp: its generated SOAP clients for
// WANIPConnection (v2 and v1) and WANPPPConnection, fed a device
// description we fetch ourselves with an HTTP client that reaches only the
// gateway (gatewayHTTP).
const (
	// upnpDescription labels our mappings in the router's table.
	upnpDescription = "plurenet"
	// maxHTTPBody bounds a description or SOAP answer: real ones are a few
	// KiB.
	maxHTTPBody = 256 << 10
	// upnpPortTries bounds the external ports tried when the one asked
	// for is taken (error 718) on a v1 gateway, which cannot pick one.
	upnpPortTries = 3
)

// UPnP error codes (WANIPConnection:2, section 2.4.16).
const (
	upnpConflict      = 718 // ConflictInMappingEntry
	upnpOnlyPermanent = 725 // OnlyPermanentLeasesSupported
)

// igdConn is what WANIPConnection1, WANIPConnection2 and WANPPPConnection1
// have in common.
type igdConn interface {
	AddPortMappingCtx(ctx context.Context, remoteHost string, extPort uint16, proto string, intPort uint16, intClient string, enabled bool, desc string, lease uint32) error
	DeletePortMappingCtx(ctx context.Context, remoteHost string, extPort uint16, proto string) error
	GetExternalIPAddressCtx(ctx context.Context) (string, error)
	GetServiceClient() *goupnp.ServiceClient
}

// anyPortConn is WANIPConnection2's AddAnyPortMapping: the gateway picks a
// free external port near the one asked for.
type anyPortConn interface {
	AddAnyPortMappingCtx(ctx context.Context, remoteHost string, extPort uint16, proto string, intPort uint16, intClient string, enabled bool, desc string, lease uint32) (uint16, error)
}

type upnpClient struct {
	gw    Gateway
	hooks testHooks
	http  *http.Client
	conn  igdConn // the gateway's WAN connection service, once found
}

func newUPnPClient(gw Gateway, hooks testHooks) *upnpClient {
	return &upnpClient{gw: gw, hooks: hooks, http: gatewayHTTP(gw.Addr)}
}

// discover finds the gateway's WAN connection service: SSDP search, device
// description, then the first service whose control URL is on the gateway.
func (c *upnpClient) discover(ctx context.Context) (igdConn, error) {
	if c.conn != nil {
		return c.conn, nil
	}
	sctx, cancel := context.WithTimeout(ctx, exchangeTimeout)
	loc, err := ssdpSearch(sctx, c.gw, c.hooks.ssdp)
	cancel()
	if err != nil {
		return nil, err
	}
	root, err := c.description(ctx, loc)
	if err != nil {
		return nil, err
	}
	var found []igdConn
	if cs, err := internetgateway2.NewWANIPConnection2ClientsFromRootDevice(root, loc); err == nil {
		for _, x := range cs {
			found = append(found, x)
		}
	}
	if cs, err := internetgateway2.NewWANIPConnection1ClientsFromRootDevice(root, loc); err == nil {
		for _, x := range cs {
			found = append(found, x)
		}
	}
	if cs, err := internetgateway2.NewWANPPPConnection1ClientsFromRootDevice(root, loc); err == nil {
		for _, x := range cs {
			found = append(found, x)
		}
	}
	why := fmt.Errorf("UPnP: the gateway's description at %s lists no WAN connection service", loc)
	for _, x := range found {
		sc := x.GetServiceClient().SOAPClient
		if err := onGateway(&sc.EndpointURL, c.gw.Addr); err != nil {
			why = fmt.Errorf("UPnP: control %w", err)
			continue
		}
		sc.HTTPClient = *c.http
		c.conn = x
		return x, nil
	}
	return nil, why
}

// description fetches and parses the root device description at loc, as
// goupnp.DeviceByURLCtx would, but through the gateway-only client.
func (c *upnpClient) description(ctx context.Context, loc *url.URL) (*goupnp.RootDevice, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("UPnP: device description: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("UPnP: device description %s: HTTP %s", loc, resp.Status)
	}
	root := new(goupnp.RootDevice)
	dec := xml.NewDecoder(resp.Body)
	dec.DefaultSpace = goupnp.DeviceXMLNamespace
	if err := dec.Decode(root); err != nil {
		return nil, fmt.Errorf("UPnP: device description %s: %w", loc, err)
	}
	base := loc
	if root.URLBaseStr != "" {
		if base, err = url.Parse(root.URLBaseStr); err != nil {
			return nil, fmt.Errorf("UPnP: device description %s: URLBase: %w", loc, err)
		}
	}
	root.SetURLBase(base)
	return root, nil
}

func (c *upnpClient) probe(ctx context.Context) (netip.Addr, error) {
	conn, err := c.discover(ctx)
	if err != nil {
		return netip.Addr{}, err
	}
	return c.external(ctx, conn)
}

func (c *upnpClient) external(ctx context.Context, conn igdConn) (netip.Addr, error) {
	s, err := conn.GetExternalIPAddressCtx(ctx)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("UPnP: external address: %w", err)
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !usableExternal(a) {
		return netip.Addr{}, fmt.Errorf("UPnP: the gateway has no usable external address (it says %q)", s)
	}
	return a.Unmap(), nil
}

func (c *upnpClient) add(ctx context.Context, port uint16, prev Mapping, lifetime time.Duration) (Mapping, error) {
	conn, err := c.discover(ctx)
	if err != nil {
		return Mapping{}, err
	}
	want := port
	if prev.IsValid() {
		want = prev.External.Port()
	}
	lease := seconds(lifetime)
	if prev.IsValid() && prev.Lifetime == 0 {
		lease = 0 // the gateway grants only permanent leases
	}
	self := c.gw.Self.String()
	var got uint16
	if anyPort, ok := conn.(anyPortConn); ok && !prev.IsValid() {
		got, err = anyPort.AddAnyPortMappingCtx(ctx, "", want, "UDP", port, self, true, upnpDescription, lease)
		if upnpCode(err) == upnpOnlyPermanent {
			lease = 0
			got, err = anyPort.AddAnyPortMappingCtx(ctx, "", want, "UDP", port, self, true, upnpDescription, lease)
		}
	} else {
		for try := 0; ; try++ {
			err = conn.AddPortMappingCtx(ctx, "", want, "UDP", port, self, true, upnpDescription, lease)
			if upnpCode(err) == upnpOnlyPermanent && lease != 0 {
				lease = 0
				continue
			}
			if upnpCode(err) != upnpConflict || try+1 >= upnpPortTries {
				break
			}
			want = uint16(1024 + rand.IntN(65536-1024)) // taken: try another
		}
		got = want
	}
	if err != nil {
		return Mapping{}, fmt.Errorf("UPnP: mapping UDP %d: %w", port, err)
	}
	if got == 0 {
		return Mapping{}, fmt.Errorf("UPnP: mapping UDP %d: the gateway reserved external port 0", port)
	}
	ext, err := c.external(ctx, conn)
	if err != nil {
		return Mapping{}, err
	}
	return Mapping{
		Protocol: UPnP,
		Internal: netip.AddrPortFrom(c.gw.Self, port),
		External: netip.AddrPortFrom(ext, got),
		Lifetime: time.Duration(lease) * time.Second,
		Obtained: time.Now(),
	}, nil
}

func (c *upnpClient) remove(ctx context.Context, m Mapping) error {
	conn, err := c.discover(ctx)
	if err != nil {
		return err
	}
	if err := conn.DeletePortMappingCtx(ctx, "", m.External.Port(), "UDP"); err != nil {
		return fmt.Errorf("UPnP: removing %s: %w", m.External, err)
	}
	return nil
}

// upnpCode returns the UPnP error code of a SOAP fault, or 0.
func upnpCode(err error) int {
	var f *soap.SOAPFaultError
	if errors.As(err, &f) {
		return f.Detail.UPnPError.Errorcode
	}
	return 0
}

// gatewayHTTP returns the HTTP client UPnP uses: it dials only gw (so a
// description or redirect naming another host goes nowhere), never through
// a proxy (the gateway is on our link), follows no redirect, and bounds
// time and the size of what it reads.
func gatewayHTTP(gw netip.Addr) *http.Client {
	d := &net.Dialer{Timeout: exchangeTimeout}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil || ap.Addr().Unmap() != gw {
				return nil, fmt.Errorf("UPnP: refusing to connect to %s: only the gateway %s", addr, gw)
			}
			return d.DialContext(ctx, "tcp4", addr)
		},
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 16 << 10,
		ResponseHeaderTimeout:  exchangeTimeout,
	}
	return &http.Client{
		Transport: limitBody{tr},
		Timeout:   exchangeTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("UPnP: the gateway redirected; not followed")
		},
	}
}

// limitBody cuts every response body at maxHTTPBody.
type limitBody struct{ rt http.RoundTripper }

func (l limitBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.rt.RoundTrip(r)
	if err == nil {
		resp.Body = limitedBody{io.LimitReader(resp.Body, maxHTTPBody), resp.Body}
	}
	return resp, err
}

type limitedBody struct {
	io.Reader
	io.Closer
}
