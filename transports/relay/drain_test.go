package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/plures/plurenet/relayserver"
)

// TestPlannedReconnectLosesNoFrame streams numbered frames from a to b while
// their connections are replaced make-before-break, either because the
// relay drains every connection at a short lifetime (as a hosted platform
// that cuts long connections would, but announced) or because the clients
// replace connections themselves before the announced lifetime runs out.
//
// What is asserted: every frame that Send accepted (returned nil for) reaches
// b exactly once, b dropped nothing, neither side saw presence churn, and
// the replacements happened for the
// expected reason. A Send refused with ErrNotConnected or ErrQueueFull is
// retried after a short sleep, because a refused frame was never the
// client's to lose; the test reports how often that happened but does not
// fail on it.
func TestPlannedReconnectLosesNoFrame(t *testing.T) {
	tests := []struct {
		name     string
		lifetime time.Duration // relay's MaxConnLifetime; it drains then
		frames   int
		why      string // the replacement reason that must show up
	}{
		// The relay announces 1 s (rounded up) but drains at 300 ms.
		{"relay drains", 300 * time.Millisecond, 2000, "relay drain"},
		// Announced 1 s (rounded down), drained at 1.5 s: the clients move
		// first, at about 0.8 s.
		{"lifetime runs out", 1500 * time.Millisecond, 2000, "connection lifetime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRelay(t, relayserver.Config{MaxConnLifetime: tt.lifetime, DrainGrace: time.Second}, nil)
			rv := newAdmission(t)
			var rec reasonRecorder
			a := newClient(t, Config{URL: r.url, Admission: rv, Logger: slog.New(&rec)})
			b := newClient(t, Config{URL: r.url, Admission: rv, Logger: slog.New(&rec)})
			waitConnected(t, a)
			waitConnected(t, b)
			waitPresent(t, a, b.PublicKey())
			waitPresent(t, b, a.PublicKey())
			streamAndCheck(t, a, b, tt.frames)
			if whys := rec.reasons(); !slices.Contains(whys, tt.why) {
				t.Errorf("replacement reasons %v do not include %q", whys, tt.why)
			}
		})
	}
}

func streamAndCheck(t *testing.T, a, b *Client, frames int) {
	type result struct {
		seen     []int
		dupes    int
		presence []Message
		err      error
	}
	done := make(chan result, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		res := result{seen: make([]int, frames)}
		got := 0
		for got < frames {
			m, err := b.Recv(ctx)
			if err != nil {
				res.err = err
				break
			}
			if m.Kind == KindPeerPresent || m.Kind == KindPeerGone {
				res.presence = append(res.presence, m)
				continue
			}
			if len(m.Payload) != 8 || m.From != a.PublicKey() {
				res.err = errors.New("unexpected frame")
				break
			}
			seq := binary.BigEndian.Uint64(m.Payload)
			if seq >= uint64(frames) {
				res.err = errors.New("sequence number out of range")
				break
			}
			if res.seen[seq]++; res.seen[seq] == 1 {
				got++
			} else {
				res.dupes++
			}
		}
		done <- res
	}()

	refused := 0
	for seq := uint64(0); seq < uint64(frames); seq++ {
		var p [8]byte
		binary.BigEndian.PutUint64(p[:], seq)
		for {
			err := a.Send(b.PublicKey(), p[:])
			if err == nil {
				break
			}
			if !errors.Is(err, ErrNotConnected) && !errors.Is(err, ErrQueueFull) {
				t.Fatalf("Send %d: %v", seq, err)
			}
			refused++
			time.Sleep(time.Millisecond)
		}
		// Pace the stream so it spans several replacements without filling
		// the relay's queue for b (which would drop, as designed).
		time.Sleep(time.Millisecond)
	}

	// The receiver gets a generous while to catch up after the last send;
	// past that, whatever is missing is lost.
	stop := time.AfterFunc(testTimeout/2, cancel)
	defer stop.Stop()
	res := <-done
	missing := 0
	for _, n := range res.seen {
		if n == 0 {
			missing++
		}
	}
	as, bs := a.Status(), b.Status()
	t.Logf("sender refused %d sends (retried); sender reconnects %d, receiver reconnects %d", refused, as.Reconnects, bs.Reconnects)
	if res.err != nil {
		t.Errorf("receiver: %v", res.err)
	}
	if missing > 0 || res.dupes > 0 {
		t.Errorf("%d of %d frames missing, %d duplicated (sender %+v, receiver %+v)", missing, frames, res.dupes, as, bs)
	}
	// Both stayed in the rendezvous throughout: a replacement must not show
	// up as presence churn on either side.
	if len(res.presence) > 0 {
		t.Errorf("receiver saw presence changes during replacements: %v", res.presence)
	}
	if m, ok := a.presence.next(); ok {
		t.Errorf("sender has a pending presence change after replacements: %v %s", m.Kind, m.From.ShortString())
	}
	if bs.RecvDrops != 0 {
		t.Errorf("receiver dropped %d frames", bs.RecvDrops)
	}
	if bs.Reconnects < 2 || as.Reconnects < 2 {
		t.Errorf("too few replacements to test anything: sender reconnects %d, receiver reconnects %d", as.Reconnects, bs.Reconnects)
	}
}

// reasonRecorder is a slog.Handler that keeps the "why" of every
// "replacing connection" record (and drops everything else).
type reasonRecorder struct {
	mu   sync.Mutex
	whys []string
}

func (r *reasonRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *reasonRecorder) Handle(_ context.Context, rec slog.Record) error {
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "why" {
			r.mu.Lock()
			r.whys = append(r.whys, a.Value.String())
			r.mu.Unlock()
		}
		return true
	})
	return nil
}

func (r *reasonRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *reasonRecorder) WithGroup(string) slog.Handler      { return r }

func (r *reasonRecorder) reasons() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.whys)
}
