package socks5

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"
)

// FuzzHandshake feeds arbitrary client bytes to the greeting and request
// parsers, as the server reads them, and checks that they never panic, never
// read past what the format allows, and that what they accept is well formed.
func FuzzHandshake(f *testing.F) {
	f.Add([]byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80})
	f.Add([]byte{5, 2, 2, 0, 5, 1, 0, 3, 9, 'e', 'c', 'h', 'o', '.', 'm', 'e', 's', 'h', 1, 187})
	f.Add([]byte{5, 1, 0, 5, 1, 0, 4, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 22})
	f.Add([]byte{5, 1, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{5, 1, 0, 5, 1, 0, 3, 0, 0, 80})
	f.Add([]byte{5, 1, 2})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		g, err := readGreeting(r)
		if err != nil || !g.noAuth {
			return
		}
		greetLen := len(data) - r.Len()
		if greetLen > 2+255 {
			t.Fatalf("greeting consumed %d bytes", greetLen)
		}
		req, err := readRequest(r)
		if used := len(data) - r.Len() - greetLen; used > 4+1+255+2 {
			t.Fatalf("request consumed %d bytes", used)
		}
		if err != nil {
			if pe, ok := errIsProtocol(err); ok {
				if pe.code == repSucceeded {
					t.Fatalf("protocol error %q with success code", pe)
				}
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		if req.cmd != cmdConnect {
			t.Fatalf("accepted command %d", req.cmd)
		}
		if req.addr.IsValid() == (req.host != "") {
			t.Fatalf("request has addr %v and host %q: want exactly one", req.addr, req.host)
		}
		if len(req.host) > 255 {
			t.Fatalf("host of %d bytes", len(req.host))
		}
		_ = req.target()
		// A reply for what was parsed encodes to a well-formed message.
		rep := appendReply(nil, repSucceeded, netip.AddrPortFrom(req.addr, req.port))
		if len(rep) != 10 && len(rep) != 22 {
			t.Fatalf("reply of %d bytes", len(rep))
		}
	})
}

// FuzzUserPass feeds arbitrary client bytes to the RFC 1929 parser and
// checks that it never panics, never reads past what the format allows
// (3+255+255 bytes), and that what it accepts is what the bytes say.
func FuzzUserPass(f *testing.F) {
	f.Add([]byte{1, 5, 'a', 'l', 'i', 'c', 'e', 3, 'p', 'w', 'd'})
	f.Add([]byte{1, 1, 'a', 1, 'b', 0xff, 0xff})
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{1, 1, 'a', 0})
	f.Add([]byte{5, 1, 'a', 1, 'b'})
	f.Add(append(append([]byte{1, 255}, bytes.Repeat([]byte{'u'}, 255)...), append([]byte{255}, bytes.Repeat([]byte{'p'}, 255)...)...))
	f.Add([]byte{1, 9, 'a'})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var buf [2 * 255]byte
		user, pass, err := readUserPass(r, &buf)
		used := len(data) - r.Len()
		if used > 3+255+255 {
			t.Fatalf("consumed %d bytes", used)
		}
		if err != nil {
			if _, ok := errIsProtocol(err); !ok && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		if len(user) == 0 || len(pass) == 0 {
			t.Fatalf("accepted an empty username or password: %q %q", user, pass)
		}
		// The accepted request re-encodes to exactly the bytes read.
		want := append([]byte{1, byte(len(user))}, user...)
		want = append(want, byte(len(pass)))
		want = append(want, pass...)
		if !bytes.Equal(want, data[:used]) {
			t.Fatalf("parsed %q/%q from % x", user, pass, data[:used])
		}
	})
}
