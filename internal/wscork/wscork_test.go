package wscork

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/testcert"
)

// recorder is a net.Conn that records each Write as one socket write.
type recorder struct {
	net.Conn // nil: only Write and SetWriteDeadline are called
	mu       sync.Mutex
	writes   [][]byte
	deadline time.Time
	fail     error
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return 0, r.fail
	}
	r.writes = append(r.writes, append([]byte(nil), p...))
	return len(p), nil
}

func (r *recorder) SetWriteDeadline(t time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deadline = t
	return nil
}

func (r *recorder) joined() []byte { return bytes.Join(r.writes, nil) }

func TestCorkedWritesLeaveInOneWrite(t *testing.T) {
	rec := &recorder{}
	c := New(rec, time.Minute)
	c.Cork()
	for _, s := range []string{"one", "two", "three"} {
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if len(rec.writes) != 0 {
		t.Fatalf("corked writes reached the socket: %q", rec.writes)
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	if len(rec.writes) != 1 || string(rec.writes[0]) != "onetwothree" {
		t.Fatalf("socket writes %q, want one write \"onetwothree\"", rec.writes)
	}
	if !rec.deadline.IsZero() {
		t.Fatalf("write deadline left set after the batch: %v", rec.deadline)
	}
	if _, err := c.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	if len(rec.writes) != 2 || string(rec.writes[1]) != "after" {
		t.Fatalf("uncorked write not passed through: %q", rec.writes)
	}
}

func TestCorkedBatchIsBounded(t *testing.T) {
	rec := &recorder{}
	c := New(rec, 0)
	c.Cork()
	chunk := bytes.Repeat([]byte{'x'}, MaxBatch/3+1)
	var want []byte
	for range 4 {
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
		want = append(want, chunk...)
	}
	big := bytes.Repeat([]byte{'y'}, MaxBatch+1)
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	want = append(want, big...)
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	for i, w := range rec.writes {
		if len(w) > MaxBatch && !bytes.Equal(w, big) {
			t.Errorf("write %d holds %d bytes, over MaxBatch", i, len(w))
		}
	}
	if !bytes.Equal(rec.joined(), want) {
		t.Fatal("bytes reordered or lost across batch flushes")
	}
}

func TestWriteErrorSticks(t *testing.T) {
	boom := errors.New("boom")
	rec := &recorder{fail: boom}
	c := New(rec, 0)
	c.Cork()
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatalf("corked write failed before any socket write: %v", err)
	}
	if err := c.Uncork(); !errors.Is(err, boom) {
		t.Fatalf("Uncork = %v, want %v", err, boom)
	}
	rec.fail = nil
	if _, err := c.Write([]byte("b")); !errors.Is(err, boom) {
		t.Fatalf("write after a failed one = %v, want the first error", err)
	}
	if len(rec.writes) != 0 {
		t.Fatalf("bytes written after the socket failed: %q", rec.writes)
	}
}

func TestNilConnCorkIsANoOp(t *testing.T) {
	var c *Conn
	c.Cork()
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
}

// countingReader is a net.Conn whose reads come from data, at most chunk
// bytes per read (a socket with chunk bytes waiting each time), and
// counts them.
type countingReader struct {
	net.Conn
	data  []byte
	chunk int
	reads int
}

func (r *countingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	r.reads++
	n := copy(p, r.data[:min(len(r.data), r.chunk)])
	r.data = r.data[n:]
	return n, nil
}

func TestReadAheadWhileBusyAndNotWhenQuiet(t *testing.T) {
	want := make([]byte, 3*MaxBatch+100)
	for i := range want {
		want[i] = byte(i * 7)
	}
	src := &countingReader{data: want, chunk: MaxBatch}
	c := New(src, 0)
	br := bufio.NewReaderSize(c, 4096)
	got, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read-ahead reordered or lost bytes")
	}
	// 4 KiB at a time would take 49 reads; read-ahead takes one per batch
	// after the first full 4 KiB read, plus the short tail and the EOF.
	if src.reads > 6 {
		t.Errorf("%d socket reads for %d bytes sent in 64 KiB batches, want at most 6", src.reads, len(want))
	}
	if c.ahead != nil {
		t.Error("read-ahead buffer held after the socket drained")
	}

	quiet := &countingReader{data: bytes.Repeat([]byte{1}, 100), chunk: 10}
	c = New(quiet, 0)
	p := make([]byte, 64)
	for range 3 {
		if _, err := c.Read(p); err != nil {
			t.Fatal(err)
		}
		if c.ahead != nil {
			t.Fatal("a connection whose reads come back short took a read-ahead buffer")
		}
	}
}

// countingConn counts the writes that reach a connection.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countingConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// A corked batch over TLS whose connection runs over a Below Conn leaves as
// one socket write of several records, and arrives intact.
func TestCorkedBatchOverTLSIsOneWrite(t *testing.T) {
	certFile, keyFile, pool := testcert.SelfSigned(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tln := tls.NewListener(NewListener(ln), &tls.Config{Certificates: []tls.Certificate{cert}})
	const total = MaxBatch - 1000 // 47 writes of 1400 bytes: four full records and a bit
	got := make(chan []byte, 1)
	go func() {
		sc, err := tln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer sc.Close()
		b := make([]byte, total)
		_, err = io.ReadFull(sc, b)
		if err != nil {
			b = nil
		}
		got <- b
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingConn{Conn: raw}
	tc := tls.Client(Below(counted), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	defer tc.Close()
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c := New(tc, time.Minute)
	if c.below == nil {
		t.Fatal("New over a TLS connection over a Below Conn did not find it")
	}
	before := counted.count()
	want := make([]byte, 0, total)
	c.Cork()
	for i := 0; len(want) < total; i++ {
		chunk := bytes.Repeat([]byte{byte(i)}, min(1400, total-len(want)))
		want = append(want, chunk...)
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	if n := counted.count() - before; n != 1 {
		t.Errorf("the batch took %d socket writes, want 1", n)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Errorf("the server read %d bytes, not the %d written", len(b), len(want))
	}
}
