package dht

import (
	"bytes"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/plures/plurenet/transports"
)

// pipeConn is a PacketConn fed by the test: reads return what deliver
// gives, writes are kept for the test to wait on.
type pipeConn struct {
	in     chan []byte
	out    chan []byte
	closed chan struct{}
	once   sync.Once
}

var fuzzFrom = &net.UDPAddr{IP: net.IPv4(192, 0, 2, 9), Port: 4000}

func newPipeConn() *pipeConn {
	return &pipeConn{in: make(chan []byte), out: make(chan []byte, 64), closed: make(chan struct{})}
}

func (c *pipeConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case b := <-c.in:
		return copy(p, b), fuzzFrom, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *pipeConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	select {
	case c.out <- append([]byte(nil), p...):
	default:
	}
	return len(p), nil
}

func (c *pipeConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *pipeConn) LocalAddr() net.Addr              { return &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 6881} }
func (c *pipeConn) SetDeadline(time.Time) error      { return nil }
func (c *pipeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *pipeConn) SetWriteDeadline(time.Time) error { return nil }

// fuzzPing is a ping query; its reply shows the node is alive and has
// handled everything delivered before it.
const fuzzPing = "d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:zz1:y1:qe"

// FuzzServerDatagram delivers arbitrary datagrams that pass the
// classifier (what the direct socket hands the DHT node) to a DHT node with
// our stores, then a ping: the node must neither crash nor stop answering.
func FuzzServerDatagram(f *testing.F) {
	f.Add([]byte(fuzzPing))
	f.Add([]byte("d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe"))
	f.Add([]byte("d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe"))
	f.Add([]byte("d1:ad2:id20:abcdefghij01234567891:v1:x3:seqi1e3:sig64:" + string(bytes.Repeat([]byte{1}, 64)) + "5:token1:xe1:q3:put1:t2:aa1:y1:qe"))
	f.Add([]byte("d1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re"))
	f.Add([]byte("d1:q13:announce_peer1:t2:aa1:y1:qe")) // crashed v2.23.0 (no arguments)
	f.Add([]byte("d1:q3:put1:t2:aa1:y1:qe"))
	conn := newPipeConn()
	srv, _, err := NewServer(conn, ServerConfig{Bootstrap: []string{}, SendRate: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(srv.Close)
	f.Fuzz(func(t *testing.T, b []byte) {
		if !transports.IsKRPC(b) {
			return
		}
		conn.in <- b
		conn.in <- []byte(fuzzPing)
		deadline := time.After(5 * time.Second)
		for {
			select {
			case out := <-conn.out:
				if bytes.Contains(out, []byte("1:t2:zz")) {
					return
				}
			case <-deadline:
				t.Fatalf("the DHT node did not answer a ping after %q", b)
			}
		}
	})
}
