package portfwd

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/plures/plurenet/internal/testkit"
)

// recordConn is a net.Conn that reads from r, writes to w and counts the
// largest read buffer it was handed; short makes every write stop one byte
// short, fail every write fail.
type recordConn struct {
	net.Conn // nil: only Read and Write are called
	r        io.Reader
	w        bytes.Buffer
	maxRead  int
	short    bool
	fail     error
}

func (c *recordConn) Read(p []byte) (int, error) {
	c.maxRead = max(c.maxRead, len(p))
	return c.r.Read(p)
}

func (c *recordConn) Write(p []byte) (int, error) {
	switch {
	case c.fail != nil:
		return 0, c.fail
	case c.short && len(p) > 0:
		c.w.Write(p[:len(p)-1])
		return len(p) - 1, nil
	}
	return c.w.Write(p)
}

// TestCopyConn: a busy direction (reads fill the buffer) moves to a large
// buffer and copies every byte; at most largeBufs are out at once, and a
// direction that finds none keeps its small one; write failures and short
// writes end the copy with an error, EOF without one.
func TestCopyConn(t *testing.T) {
	data := testkit.RandomData(t, 4<<20)
	tests := []struct {
		name     string
		src      io.Reader
		full     bool // every large buffer is out
		wantRead int
	}{
		{"bulk", bytes.NewReader(data), false, largeBufSize},
		{"bulk, no large buffer free", bytes.NewReader(data), true, copyBufSize},
		// A reader that never fills the buffer (an interactive session)
		// stays small.
		{"trickle", io.LimitReader(&oneKiB{data: data}, int64(len(data))), false, copyBufSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.full {
				for range largeBufs {
					largeSlots <- struct{}{}
				}
				defer func() {
					for range largeBufs {
						<-largeSlots
					}
				}()
			}
			src, dst := &recordConn{r: tt.src}, &recordConn{}
			n, err := copyConn(dst, src)
			if err != nil || n != int64(len(data)) || !bytes.Equal(dst.w.Bytes(), data) {
				t.Fatalf("copied %d of %d bytes (equal %v), err %v", n, len(data), bytes.Equal(dst.w.Bytes(), data), err)
			}
			if src.maxRead != tt.wantRead {
				t.Fatalf("largest read buffer %d bytes, want %d", src.maxRead, tt.wantRead)
			}
			if len(largeSlots) != map[bool]int{false: 0, true: largeBufs}[tt.full] {
				t.Fatalf("%d large buffers out after the copy", len(largeSlots))
			}
		})
	}

	boom := errors.New("boom")
	if _, err := copyConn(&recordConn{fail: boom}, &recordConn{r: bytes.NewReader(data)}); !errors.Is(err, boom) {
		t.Fatalf("failed write: err %v, want %v", err, boom)
	}
	if _, err := copyConn(&recordConn{short: true}, &recordConn{r: bytes.NewReader(data)}); !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("short write: err %v, want io.ErrShortWrite", err)
	}
	if _, err := copyConn(&recordConn{}, &recordConn{r: io.MultiReader(bytes.NewReader(data[:10]), errReader{boom})}); !errors.Is(err, boom) {
		t.Fatalf("failed read: err %v, want %v", err, boom)
	}
	if len(largeSlots) != 0 {
		t.Fatalf("%d large buffers out after failed copies", len(largeSlots))
	}
}

// oneKiB hands out data 1 KiB per read.
type oneKiB struct{ data []byte }

func (r *oneKiB) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 1024)], r.data)
	r.data = r.data[n:]
	return n, nil
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
