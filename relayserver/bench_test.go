package relayserver_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testkit"
	"github.com/plures/plurenet/relayserver"
)

// benchWindow is how many frames a benchmark sender may have outstanding, so
// that no queue overflows and every frame is counted.
const benchWindow = 256

// pump sends n frames with send and waits until recv has read them all.
func pump(b *testing.B, n int, send func() error, recv func() error) {
	b.Helper()
	credit := make(chan struct{}, benchWindow)
	for range benchWindow {
		credit <- struct{}{}
	}
	var wg sync.WaitGroup
	var recvErr error
	wg.Go(func() {
		for range n {
			if recvErr = recv(); recvErr != nil {
				return
			}
			credit <- struct{}{}
		}
	})
	for range n {
		<-credit
		if err := send(); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	if recvErr != nil {
		b.Fatal(recvErr)
	}
}

// BenchmarkForward measures 1 KiB frames client → relay → client, beside a
// baseline of the same two WebSocket hops through a forwarder that does
// nothing but copy. The ratio is the relay's own cost.
func BenchmarkForward(b *testing.B) {
	const size = 1024
	payload := make([]byte, size)
	ctx := context.Background()

	b.Run("baseline", func(b *testing.B) {
		in := make(chan *websocket.Conn, 1)
		done := make(chan struct{})
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ws, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			ws.SetReadLimit(relayproto.MaxFrame)
			if r.URL.Path == "/out" {
				in <- ws
				<-done
				ws.CloseNow()
				return
			}
			out := <-in
			for {
				_, m, err := ws.Read(ctx)
				if err != nil {
					return
				}
				if out.Write(ctx, websocket.MessageBinary, m) != nil {
					return
				}
			}
		}))
		defer hs.Close()
		defer close(done)
		url := "ws" + strings.TrimPrefix(hs.URL, "http")
		rx, _, err := websocket.Dial(ctx, url+"/out", nil)
		if err != nil {
			b.Fatal(err)
		}
		defer rx.CloseNow()
		tx, _, err := websocket.Dial(ctx, url+"/in", nil)
		if err != nil {
			b.Fatal(err)
		}
		defer tx.CloseNow()
		frame := relayproto.AppendSend(nil, relayproto.Key{}, payload)
		b.SetBytes(size)
		b.ResetTimer()
		pump(b, b.N,
			func() error { return tx.Write(ctx, websocket.MessageBinary, frame) },
			func() error { _, _, err := rx.Read(ctx); return err })
	})

	b.Run("relay", func(b *testing.B) {
		r := newRelay(b, relayserver.Config{RateBytesPerSec: relayserver.Unlimited})
		tx := connect(b, r, testkit.Key(b), testkit.Admission(1))
		rx := connect(b, r, testkit.Key(b), testkit.Admission(1))
		tx.expect(relayproto.TypePeerPresent, rx.key)
		rx.expect(relayproto.TypePeerPresent, tx.key)
		frame := relayproto.AppendSend(nil, rx.key, payload)
		b.SetBytes(size)
		b.ResetTimer()
		pump(b, b.N,
			func() error { return tx.ws.Write(ctx, websocket.MessageBinary, frame) },
			func() error { _, _, err := rx.ws.Read(ctx); return err })
	})
}
