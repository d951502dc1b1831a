// Package echotest gives tests one TCP echo server, so that every package
// that carries streams (the userspace adapter, SOCKS5, port forwards) is
// checked against the same behaviour.
package echotest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Serve echoes every connection accepted on ln until EOF, then half-closes
// it where the connection supports that, so a client sees its own bytes and
// then EOF only if a half-close crossed whatever sits in between. The test's
// cleanup closes ln and waits for every goroutine Serve started.
func Serve(t testing.TB, ln net.Listener) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
				if cw, ok := c.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
}
