package static

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/plures/plurenet/discovery"
	"github.com/plures/plurenet/internal/nodekey"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// noDNS answers from /etc/hosts only: tests query no name server.
var noDNS = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("no DNS in tests")
}}

func mustParse(t *testing.T, s string) Peer {
	t.Helper()
	p, err := ParsePeer(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSourceReports: addresses are reported before Start returns, names
// once looked up (from /etc/hosts here), a name that does not resolve
// never; Close ends the lookups.
func TestSourceReports(t *testing.T) {
	priv, err := nodekey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	keyed := mustParse(t, priv.Public().String()+"@192.0.2.1:51898")
	named := mustParse(t, "localhost:5000")
	lost := mustParse(t, "nas.invalid:5001")
	s, err := New(Config{Peers: []Peer{keyed, named, lost}, Interval: time.Hour, Resolver: noDNS, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	found := make(chan discovery.Peer, 8)
	if err := s.Start(context.Background(), discovery.Sink{Found: func(p discovery.Peer) { found <- p }}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	select {
	case p := <-found:
		if p != (discovery.Peer{Label: keyed.String(), Key: keyed.Key, Addr: netip.MustParseAddrPort("192.0.2.1:51898")}) {
			t.Fatalf("first report %+v", p)
		}
	default:
		t.Fatal("the address peer was not reported before Start returned")
	}
	select {
	case p := <-found:
		if p != (discovery.Peer{Label: "localhost:5000", Addr: netip.MustParseAddrPort("127.0.0.1:5000")}) {
			t.Fatalf("named peer reported as %+v", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("localhost was never reported")
	}
	if err := s.Announce([]byte{1}); err != nil {
		t.Fatalf("Announce: %v", err)
	}
	s.Close()
	s.Close()
	if len(found) != 0 {
		t.Fatalf("a name that does not resolve was reported: %+v", <-found)
	}
	if err := s.Start(context.Background(), discovery.Sink{Found: func(discovery.Peer) {}}); err == nil {
		t.Fatal("second Start succeeded")
	}
}

func TestNewRefuses(t *testing.T) {
	many := make([]Peer, MaxPeers+1)
	for i := range many {
		many[i] = Peer{Host: "192.0.2.1", Port: uint16(i + 1)}
	}
	if _, err := New(Config{Peers: many}); err == nil {
		t.Fatal("New took more than MaxPeers")
	}
	if _, err := New(Config{Peers: []Peer{{Host: "x"}}}); err == nil {
		t.Fatal("New took a peer without a port")
	}
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background(), discovery.Sink{}); err == nil {
		t.Fatal("Start without a Found func succeeded")
	}
}

func TestParsePeer(t *testing.T) {
	priv, err := nodekey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	key := priv.Public()
	tests := []struct {
		in      string
		want    Peer
		wantErr bool
	}{
		{in: "192.0.2.1:51898", want: Peer{Host: "192.0.2.1", Port: 51898}},
		{in: key.String() + "@192.0.2.1:51898", want: Peer{Key: key, Host: "192.0.2.1", Port: 51898}},
		{in: key.String() + "@nas.local:1", want: Peer{Key: key, Host: "nas.local", Port: 1}},
		{in: "[::ffff:192.0.2.1]:5", want: Peer{Host: "192.0.2.1", Port: 5}},
		{in: "192.0.2.1", wantErr: true},
		{in: "192.0.2.1:0", wantErr: true},
		{in: "192.0.2.1:65536", wantErr: true},
		{in: ":51898", wantErr: true},
		{in: "[2001:db8::1]:51898", want: Peer{Host: "2001:db8::1", Port: 51898}},
		{in: key.String() + "@[fd12:3456::7]:51898", want: Peer{Key: key, Host: "fd12:3456::7", Port: 51898}},
		{in: "[fe80::1]:51898", wantErr: true},
		{in: "[fe80::1%eth0]:51898", wantErr: true},
		{in: "[ff02::1]:51898", wantErr: true},
		{in: "[::]:51898", wantErr: true},
		{in: "[not:an:ip]:51898", wantErr: true},
		{in: "2001:db8::1:51898", wantErr: true},
		{in: "224.0.0.1:5", wantErr: true},
		{in: "0.0.0.0:5", wantErr: true},
		{in: "notakey@192.0.2.1:5", wantErr: true},
		{in: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=@192.0.2.1:5", wantErr: true},
		{in: "a b:5", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePeer(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParsePeer = %+v, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParsePeer = %+v, %v; want %+v", got, err, tt.want)
			}
			// String gives back a form ParsePeer reads the same.
			if again, err := ParsePeer(got.String()); err != nil || again != got {
				t.Fatalf("round trip of %q: %+v, %v", got.String(), again, err)
			}
		})
	}
}

func FuzzParsePeer(f *testing.F) {
	f.Add("192.0.2.1:51898")
	f.Add("[2001:db8::1]:51898")
	f.Add("hT1kZ2Tl9QpRCHNzIcUeCKkT3YgT3lG7RXjZzx6hwQI=@host.example:1")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePeer(s)
		if err != nil {
			return
		}
		if p.Port == 0 || p.Host == "" {
			t.Fatalf("ParsePeer(%q) = %+v without an error", s, p)
		}
		again, err := ParsePeer(p.String())
		if err != nil || again != p {
			t.Fatalf("ParsePeer(%q).String() = %q does not parse back: %+v, %v", s, p.String(), again, err)
		}
	})
}
