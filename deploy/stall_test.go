package deploy_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/internal/testkit"
)

// stallWriteTimeout is the write timeout of the stall scenario's relay:
// short, so the scenario ends soon after the socket buffers fill.
const stallWriteTimeout = time.Second

// stallSendEvery is how often the stalled client speaks, so that it never
// looks idle: the relay must cut it for not reading, not for silence.
const stallSendEvery = 100 * time.Millisecond

// testWriteStall: a client that keeps sending but stops reading is cut once
// a frame queued for it waits WriteTimeout to be written, and its peers see
// it gone. Without that bound it would hold its send queue (up to 4 MiB) for
// as long as it keeps talking.
func testWriteStall(t *testing.T, tg *target) {
	rv := testkit.Admission(15)
	ka, kb := testkit.Key(t), testkit.Key(t)
	a := connect(t, tg, ka, rv)
	b := connect(t, tg, kb, rv) // from here on, b reads nothing
	a.expect(relayproto.TypePeerPresent, kb.Public())

	nobody := testkit.Key(t).Public()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(2)
	go func() { // b keeps talking, to a key nobody holds
		defer wg.Done()
		tick := time.NewTicker(stallSendEvery)
		defer tick.Stop()
		for {
			if b.ws.Write(ctx, websocket.MessageBinary, relayproto.AppendSend(nil, nobody, []byte("still here"))) != nil {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	go func() { // a floods b with full-size frames until b is cut
		defer wg.Done()
		frame := relayproto.AppendSend(nil, kb.Public(), make([]byte, relayproto.MaxPayload))
		for ctx.Err() == nil {
			if a.ws.Write(ctx, websocket.MessageBinary, frame) != nil {
				return
			}
		}
	}()

	rctx, rcancel := context.WithTimeout(context.Background(), patience)
	defer rcancel()
	for {
		_, msg, err := a.ws.Read(rctx)
		if err != nil {
			t.Fatalf("a client that stopped reading was not cut within %v (write timeout %v): %v", patience, stallWriteTimeout, err)
		}
		f, err := relayproto.Parse(msg)
		switch {
		case err != nil:
			t.Fatalf("relay sent a bad frame %x: %v", msg, err)
		case f.Type == relayproto.TypePeerGone && f.Key == kb.Public():
			return
		case f.Type == relayproto.TypeError && f.Code != relayproto.ErrRateLimited:
			t.Fatalf("the flooding client got a fatal error: %v %q", f.Code, f.Message)
		}
	}
}
