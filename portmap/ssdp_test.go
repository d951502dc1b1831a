package portmap

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestParseSSDPAnswer: only an answer pointing at the gateway's own
// address over plain HTTP is followed.
func TestParseSSDPAnswer(t *testing.T) {
	gw := netip.MustParseAddr("192.168.1.1")
	answer := func(loc string) []byte {
		return []byte("HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: " + loc + "\r\n\r\n")
	}
	tests := []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"gateway", answer("http://192.168.1.1:5000/rootDesc.xml"), true},
		{"other host", answer("http://192.168.1.20:5000/rootDesc.xml"), false},
		{"metadata service", answer("http://169.254.169.254/latest/"), false},
		{"name", answer("http://router.lan:5000/rootDesc.xml"), false},
		{"https", answer("https://192.168.1.1/rootDesc.xml"), false},
		{"no location", []byte("HTTP/1.1 200 OK\r\n\r\n"), false},
		{"error status", []byte("HTTP/1.1 404 Not Found\r\nLOCATION: http://192.168.1.1/x\r\n\r\n"), false},
		{"garbage", []byte("\x00\x01 not http"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loc, err := parseSSDPAnswer(tt.b, gw)
			if (err == nil) != tt.ok {
				t.Fatalf("parseSSDPAnswer = %v, %v; want ok %v", loc, err, tt.ok)
			}
		})
	}
}

// TestSSDPOnlyFromGateway: a search ignores answers from any host but the
// gateway: here the only answer comes from another host on the link,
// pointing at itself.
func TestSSDPOnlyFromGateway(t *testing.T) {
	g := newFakeGateway(t, fakeConfig{upnp: true})
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			_, from, err := other.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			ans := "HTTP/1.1 200 OK\r\nLOCATION: http://" + other.LocalAddr().String() + "/rootDesc.xml\r\n\r\n"
			_, _ = other.WriteToUDPAddrPort([]byte(ans), from)
		}
	}()
	defer func() { other.Close(); <-done }()
	gw, err := gatewayFrom(g.addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), exchangeTimeout)
	defer cancel()
	loc, err := ssdpSearch(ctx, gw, other.LocalAddr().(*net.UDPAddr).AddrPort())
	if err == nil {
		t.Fatalf("followed another host's answer to %s", loc)
	}
	if !strings.Contains(err.Error(), "no answer from "+g.addr.String()) {
		t.Errorf("error %q; want it to say the gateway did not answer", err)
	}
}

// TestGatewayHTTPOnlyGateway: the UPnP HTTP client connects to nothing
// but the gateway and follows no redirect.
func TestGatewayHTTPOnlyGateway(t *testing.T) {
	g := newFakeGateway(t, fakeConfig{upnp: true})
	elsewhere := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("a request reached another host: %s", r.URL)
	}), ReadHeaderTimeout: time.Second}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go elsewhere.Serve(ln)
	defer elsewhere.Close()

	c := gatewayHTTP(g.addr)
	if _, err := c.Get("http://" + ln.Addr().String() + "/"); err == nil || !strings.Contains(err.Error(), "only the gateway") {
		t.Errorf("GET another host: %v; want a refusal", err)
	}
	resp, err := c.Get("http://" + g.hln.Addr().String() + "/rootDesc.xml")
	if err != nil {
		t.Fatalf("GET the gateway: %v", err)
	}
	resp.Body.Close()

	redirect := &http.Server{Handler: http.RedirectHandler("http://"+ln.Addr().String()+"/", http.StatusFound), ReadHeaderTimeout: time.Second}
	rln, err := net.Listen("tcp4", netip.AddrPortFrom(g.addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	go redirect.Serve(rln)
	defer redirect.Close()
	if _, err := c.Get("http://" + rln.Addr().String() + "/"); err == nil || !strings.Contains(err.Error(), "redirect") {
		t.Errorf("a redirect from the gateway: %v; want it refused", err)
	}
	if err := onGateway(&url.URL{Scheme: "http", Host: "10.0.0.9:80"}, g.addr); err == nil {
		t.Error("onGateway accepted another host")
	}
}

func FuzzParseSSDPAnswer(f *testing.F) {
	gw := netip.MustParseAddr("192.168.1.1")
	f.Add([]byte("HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nLOCATION: http://192.168.1.20/x\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 404 Not Found\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		loc, err := parseSSDPAnswer(b, gw)
		if err != nil {
			return
		}
		if onGateway(loc, gw) != nil {
			t.Fatalf("accepted %q, which is not on the gateway", loc)
		}
	})
}
