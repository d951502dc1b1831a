package portmap

import (
	"context"
	"encoding/binary"
	"encoding/xml"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeGateway is a gateway on a loopback address of its own (127.x.y.z:
// Linux routes all of 127/8 to lo) that speaks the protocols it is told
// to: NAT-PMP and PCP on UDP 5351 as miniupnpd does (the version byte
// tells them apart), and UPnP IGD v1 with a unicast SSDP responder (the
// client's test hook sends its search there: loopback has no multicast).
type fakeGateway struct {
	t              *testing.T
	addr           netip.Addr
	ext            netip.Addr
	pmp, pcp, upnp bool
	// grant caps the lifetime granted, in seconds (0: what was asked).
	grant uint32

	udp  *net.UDPConn
	ssdp *net.UDPConn
	http *http.Server
	hln  net.Listener
	wg   sync.WaitGroup

	mu       sync.Mutex
	mappings map[uint16]uint16 // external port -> internal port
	adds     map[Protocol]int
	removes  map[Protocol]int
	changed  chan struct{} // signalled (non-blocking) on every add and remove
}

type fakeConfig struct {
	pmp, pcp, upnp bool
	grant          uint32
}

func newFakeGateway(t *testing.T, fc fakeConfig) *fakeGateway {
	t.Helper()
	g := &fakeGateway{t: t, ext: netip.MustParseAddr("198.51.100.7"), pmp: fc.pmp, pcp: fc.pcp, upnp: fc.upnp, grant: fc.grant,
		mappings: map[uint16]uint16{}, adds: map[Protocol]int{}, removes: map[Protocol]int{}, changed: make(chan struct{}, 1)}
	for try := 0; ; try++ {
		g.addr = netip.AddrFrom4([4]byte{127, byte(1 + rand.IntN(250)), byte(rand.IntN(256)), byte(1 + rand.IntN(250))})
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(g.addr, pcpPort)))
		if err == nil {
			g.udp = c
			break
		}
		if try > 10 {
			t.Fatalf("fake gateway: %v", err)
		}
	}
	var err error
	if g.ssdp, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(g.addr, 1900))); err != nil {
		t.Fatalf("fake gateway: SSDP: %v", err)
	}
	if g.hln, err = net.Listen("tcp4", netip.AddrPortFrom(g.addr, 0).String()); err != nil {
		t.Fatalf("fake gateway: HTTP: %v", err)
	}
	g.http = &http.Server{Handler: http.HandlerFunc(g.serveHTTP), ReadHeaderTimeout: time.Second}
	g.wg.Add(3)
	go func() { defer g.wg.Done(); g.serveUDP() }()
	go func() { defer g.wg.Done(); g.serveSSDP() }()
	go func() { defer g.wg.Done(); _ = g.http.Serve(g.hln) }()
	t.Cleanup(func() {
		g.udp.Close()
		g.ssdp.Close()
		g.http.Close()
		g.wg.Wait()
	})
	return g
}

// config is a Config aimed at the fake.
func (g *fakeGateway) config(port uint16) Config {
	return Config{Port: port, Gateway: g.addr, hooks: testHooks{ssdp: netip.AddrPortFrom(g.addr, 1900)}}
}

func (g *fakeGateway) signal() {
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

// counts returns how many adds (renewals included) and removes each
// protocol saw, and the live mappings.
func (g *fakeGateway) counts() (adds, removes map[Protocol]int, live map[uint16]uint16) {
	g.mu.Lock()
	defer g.mu.Unlock()
	adds, removes, live = map[Protocol]int{}, map[Protocol]int{}, map[uint16]uint16{}
	for k, v := range g.adds {
		adds[k] = v
	}
	for k, v := range g.removes {
		removes[k] = v
	}
	for k, v := range g.mappings {
		live[k] = v
	}
	return adds, removes, live
}

func (g *fakeGateway) lifetime(asked uint32) uint32 {
	if g.grant != 0 && asked > g.grant {
		return g.grant
	}
	return asked
}

// record applies a mapping request: lifetime 0 removes.
func (g *fakeGateway) record(p Protocol, internal, external uint16, lifetime uint32) {
	g.mu.Lock()
	if lifetime == 0 {
		for e, i := range g.mappings {
			if i == internal && (external == 0 || e == external) {
				delete(g.mappings, e)
			}
		}
		g.removes[p]++
	} else {
		g.mappings[external] = internal
		g.adds[p]++
	}
	g.mu.Unlock()
	g.signal()
}

func (g *fakeGateway) serveUDP() {
	buf := make([]byte, 1500)
	for {
		n, from, err := g.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if resp := g.answer(buf[:n], from); resp != nil {
			_, _ = g.udp.WriteToUDPAddrPort(resp, from)
		}
	}
}

func (g *fakeGateway) answer(b []byte, from netip.AddrPort) []byte {
	if len(b) < 2 {
		return nil
	}
	g.mu.Lock()
	pmp, pcp := g.pmp, g.pcp
	g.mu.Unlock()
	switch b[0] {
	case 0: // NAT-PMP
		if !pmp {
			return nil
		}
		return g.answerPMP(b)
	case pcpVersion:
		if !pcp {
			if pmp { // RFC 6887 section 9: a NAT-PMP server's answer
				return []byte{0, 128 + b[1], 0, 1, 0, 0, 0, 0}
			}
			return nil
		}
		return g.answerPCP(b, from)
	}
	return nil
}

func (g *fakeGateway) answerPMP(b []byte) []byte {
	switch {
	case b[1] == 0 && len(b) == 2:
		r := []byte{0, 128, 0, 0, 0, 0, 0, 1}
		e := g.ext.As4()
		return append(r, e[:]...)
	case b[1] == 1 && len(b) == 12:
		internal := binary.BigEndian.Uint16(b[4:6])
		ext := binary.BigEndian.Uint16(b[6:8])
		life := g.lifetime(binary.BigEndian.Uint32(b[8:12]))
		if ext == 0 {
			ext = internal
		}
		g.record(NATPMP, internal, ext, life)
		if life == 0 {
			ext = 0
		}
		r := []byte{0, 129, 0, 0, 0, 0, 0, 1}
		r = binary.BigEndian.AppendUint16(r, internal)
		r = binary.BigEndian.AppendUint16(r, ext)
		return binary.BigEndian.AppendUint32(r, life)
	}
	return []byte{0, 128 + b[1], 0, 5, 0, 0, 0, 1} // unsupported opcode
}

func (g *fakeGateway) answerPCP(b []byte, from netip.AddrPort) []byte {
	if len(b) < pcpHeader {
		return nil
	}
	op := b[1]
	life := g.lifetime(binary.BigEndian.Uint32(b[4:8]))
	client := netip.AddrFrom16([16]byte(b[8:24])).Unmap()
	result := byte(0)
	if client != from.Addr() {
		result = 12 // ADDRESS_MISMATCH
	}
	resp := append([]byte{pcpVersion, op | pcpResponse, 0, result}, binary.BigEndian.AppendUint32(nil, life)...)
	resp = binary.BigEndian.AppendUint32(resp, 1) // epoch
	resp = append(resp, make([]byte, 12)...)
	if op != pcpOpMap || len(b) < pcpHeader+pcpMapBody {
		return resp
	}
	body := append([]byte(nil), b[pcpHeader:pcpHeader+pcpMapBody]...)
	internal := binary.BigEndian.Uint16(body[16:18])
	ext := binary.BigEndian.Uint16(body[18:20])
	if ext == 0 {
		ext = internal
	}
	if result == 0 {
		g.record(PCP, internal, ext, life)
	}
	binary.BigEndian.PutUint16(body[18:20], ext)
	e := g.ext.As16()
	copy(body[20:36], e[:])
	return append(resp, body...)
}

func (g *fakeGateway) serveSSDP() {
	buf := make([]byte, 2048)
	for {
		n, from, err := g.ssdp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if !g.upnp || !strings.HasPrefix(string(buf[:n]), "M-SEARCH") {
			continue
		}
		ans := "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
			"USN: uuid:fake::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
			"LOCATION: http://" + g.hln.Addr().String() + "/rootDesc.xml\r\n\r\n"
		_, _ = g.ssdp.WriteToUDPAddrPort([]byte(ans), from)
	}
}

const fakeRootDesc = `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>0</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><friendlyName>fake</friendlyName><UDN>uuid:fake</UDN>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><UDN>uuid:fake-wan</UDN>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType><UDN>uuid:fake-wanconn</UDN>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL><SCPDURL>/WANIPCn.xml</SCPDURL></service></serviceList>
</device></deviceList></device></deviceList></device></root>`

// soapArgs is every argument the fake's actions take.
type soapArgs struct {
	ExternalPort uint16 `xml:"NewExternalPort"`
	InternalPort uint16 `xml:"NewInternalPort"`
	Client       string `xml:"NewInternalClient"`
	Lease        uint32 `xml:"NewLeaseDuration"`
}

func (g *fakeGateway) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/rootDesc.xml":
		io.WriteString(w, fakeRootDesc)
		return
	case "/ctl/IPConn":
	default:
		http.NotFound(w, r)
		return
	}
	action := strings.Trim(r.Header.Get("SOAPACTION"), `"`)
	action = action[strings.LastIndex(action, "#")+1:]
	var env struct {
		Body struct {
			Inner []byte `xml:",innerxml"`
		} `xml:"Body"`
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err := xml.Unmarshal(body, &env); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var args soapArgs
	_ = xml.Unmarshal(env.Body.Inner, &args)
	out := ""
	switch action {
	case "GetExternalIPAddress":
		out = "<NewExternalIPAddress>" + g.ext.String() + "</NewExternalIPAddress>"
	case "AddPortMapping":
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if args.Client != host { // miniupnpd's secure_mode
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>606</errorCode><errorDescription>Action not authorized</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`)
			return
		}
		g.record(UPnP, args.InternalPort, args.ExternalPort, max(g.lifetime(args.Lease), 1))
	case "DeletePortMapping":
		g.mu.Lock()
		internal := g.mappings[args.ExternalPort]
		g.mu.Unlock()
		g.record(UPnP, internal, args.ExternalPort, 0)
	default:
		http.Error(w, "unknown action", http.StatusInternalServerError)
		return
	}
	fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:%sResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">%s</u:%sResponse></s:Body></s:Envelope>`, action, out, action)
}

// waitChange waits for the fake to record an add or a remove.
func (g *fakeGateway) waitChange(ctx context.Context) bool {
	select {
	case <-g.changed:
		return true
	case <-ctx.Done():
		return false
	}
}
