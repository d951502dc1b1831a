package wscork

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
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
