package owner

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrMalformed wraps every decoding error: the bytes are not a document of
// this version, whoever sent them.
var ErrMalformed = errors.New("owner: malformed document")

// reader decodes a document without ever reading past its input or
// allocating more than the input's size.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
}

func (r *reader) bytes(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.fail("%s truncated", what)
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) byte(what string) byte {
	b := r.bytes(1, what)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *reader) uint16(what string) int {
	b := r.bytes(2, what)
	if b == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(b))
}

func (r *reader) uint64(what string) uint64 {
	b := r.bytes(8, what)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// short reads a 1-byte length and that many bytes, at most max.
func (r *reader) short(max int, what string) string {
	n := int(r.byte(what + " length"))
	if r.err == nil && n > max {
		r.fail("%s of %d bytes, at most %d", what, n, max)
		return ""
	}
	return string(r.bytes(n, what))
}

// end fails unless every byte was read: a document has no trailing fields,
// so that one set of signed bytes has exactly one meaning.
func (r *reader) end(what string) error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d bytes after the %s", len(r.b), what)
	}
	return r.err
}

func appendShort(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}

func appendUint16(b []byte, v int) []byte { return binary.BigEndian.AppendUint16(b, uint16(v)) }

func appendUint64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }
