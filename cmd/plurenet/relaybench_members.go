package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/relayproto"
	"github.com/plures/plurenet/transports/relay"
)

// The client side of relay-bench: N members, each one WebSocket with the
// relay handshake done and a reader, plus a sender per traffic pair. It is
// deliberately lean (one goroutine per idle member) so that the client side
// can hold as many connections as the relay under test.

const (
	// benchDialParallel bounds connection attempts in flight: beyond a few
	// dozen, loopback SYN backlogs overflow and retries only add noise.
	benchDialParallel = 32
	// benchStampSize is the timestamp at the head of each traffic payload.
	benchStampSize = 8
)

// benchParams is what the members do.
type benchParams struct {
	URL      string
	Members  int
	Pairs    int
	Duration time.Duration
	Size     int
	Window   int
}

// benchResult is what the members saw, sent as JSON by a worker process.
type benchResult struct {
	Connected       int     `json:"connected"`
	ConnectSeconds  float64 `json:"connect_seconds"`
	ClientHeapStack uint64  `json:"client_heap_stack_bytes"` // members' side, after connecting
	Sent            uint64  `json:"sent"`
	Received        uint64  `json:"received"`
	TrafficSeconds  float64 `json:"traffic_seconds"`
	P50Micros       float64 `json:"p50_us"`
	P99Micros       float64 `json:"p99_us"`
	MaxMicros       float64 `json:"max_us"`
}

type benchMember struct {
	ws  *websocket.Conn
	key nodekey.Public
}

// benchMembers holds the members and their readers.
type benchMembers struct {
	p       benchParams
	members []*benchMember
	epoch   time.Time
	hist    histogram
	recv    atomic.Uint64
	credit  []chan struct{} // per pair: the receiver returns a credit per frame
	readers sync.WaitGroup
}

// connectMembers opens p.Members connections. Member i joins rendezvous i/2,
// so every member has one peer; the first p.Pairs pairs carry traffic.
func connectMembers(ctx context.Context, p benchParams) (*benchMembers, error) {
	bm := &benchMembers{p: p, members: make([]*benchMember, p.Members), epoch: time.Now()}
	bm.credit = make([]chan struct{}, p.Pairs)
	for i := range bm.credit {
		bm.credit[i] = make(chan struct{}, p.Window)
		for range p.Window {
			bm.credit[i] <- struct{}{}
		}
	}
	sem := make(chan struct{}, benchDialParallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range p.Members {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			m, err := dialMember(ctx, p.URL, i)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("member %d: %w", i, err)
				}
				return
			}
			bm.members[i] = m
		})
	}
	wg.Wait()
	for i, m := range bm.members {
		if m != nil {
			bm.readers.Go(func() { bm.read(i, m) })
		}
	}
	if firstErr != nil {
		bm.close()
		return nil, firstErr
	}
	return bm, nil
}

// dialMember connects and authenticates member i, with the relay client's
// own handshake.
func dialMember(ctx context.Context, url string, i int) (*benchMember, error) {
	priv, err := nodekey.NewPrivate()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ws, err := relay.DialWebSocket(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	if _, err := relay.Handshake(ctx, ws, priv, benchAdmission(i/2)); err != nil {
		ws.CloseNow()
		return nil, err
	}
	return &benchMember{ws: ws, key: priv.Public()}, nil
}

// benchAdmission is the admission key of pair's mesh: a fixed seed per
// pair, so the two members of a pair meet and nobody else.
func benchAdmission(pair int) relayproto.AdmissionKey {
	var seed [32]byte
	binary.BigEndian.PutUint64(seed[:], uint64(pair))
	copy(seed[8:], "plurenet relay-bench")
	return relayproto.NewAdmissionKey(seed)
}

// read consumes member i's frames until its connection closes, timing the
// traffic frames and returning credit to their sender.
func (bm *benchMembers) read(i int, m *benchMember) {
	for {
		_, b, err := m.ws.Read(context.Background())
		if err != nil {
			return
		}
		f, err := relayproto.Parse(b)
		if err != nil || f.Type != relayproto.TypeRecv || len(f.Payload) < benchStampSize {
			continue
		}
		sent := time.Duration(binary.BigEndian.Uint64(f.Payload))
		bm.hist.add(time.Since(bm.epoch) - sent)
		bm.recv.Add(1)
		if pair := i / 2; pair < len(bm.credit) {
			select {
			case bm.credit[pair] <- struct{}{}:
			default:
			}
		}
	}
}

// traffic runs every pair's sender for d and returns the frames sent.
func (bm *benchMembers) traffic(ctx context.Context, d time.Duration) (sent uint64, elapsed time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var n atomic.Uint64
	var wg sync.WaitGroup
	start := time.Now()
	for pair := range bm.p.Pairs {
		from, to := bm.members[2*pair], bm.members[2*pair+1]
		wg.Go(func() {
			payload := make([]byte, bm.p.Size)
			frame := make([]byte, 0, 1+relayproto.KeySize+bm.p.Size)
			for {
				select {
				case <-ctx.Done():
					return
				case <-bm.credit[pair]:
				}
				binary.BigEndian.PutUint64(payload, uint64(time.Since(bm.epoch)))
				frame = relayproto.AppendSend(frame[:0], to.key, payload)
				if err := from.ws.Write(ctx, websocket.MessageBinary, frame); err != nil {
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed = time.Since(start)
	// Let frames in flight land before the count is read; a frame the relay
	// dropped never comes, so this wait is bounded.
	time.Sleep(200 * time.Millisecond)
	return n.Load(), elapsed
}

func (bm *benchMembers) close() {
	for _, m := range bm.members {
		if m != nil {
			m.ws.CloseNow()
		}
	}
	bm.readers.Wait()
}

func (bm *benchMembers) connected() int {
	n := 0
	for _, m := range bm.members {
		if m != nil {
			n++
		}
	}
	return n
}

// memUse is heap and stack memory in use.
type memUse struct{ heap, stack uint64 }

// heapStack is the heap and stack memory in use, after a collection.
func heapStack() memUse {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memUse{heap: ms.HeapInuse, stack: ms.StackInuse}
}

func (m memUse) total() uint64 { return m.heap + m.stack }

// since is what m holds beyond base, each part at least zero.
func (m memUse) since(base memUse) memUse {
	sub := func(a, b uint64) uint64 { return a - min(a, b) }
	return memUse{heap: sub(m.heap, base.heap), stack: sub(m.stack, base.stack)}
}

// histogram records durations with about 3% resolution in bounded space:
// 64 powers of two, 32 linear steps within each.
type histogram struct {
	mu     sync.Mutex
	counts [64 * 32]uint64
	n      uint64
	max    time.Duration
}

func histIndex(v uint64) int {
	if v < 32 {
		return int(v)
	}
	e := bits.Len64(v) - 6 // shift that leaves 5 significant bits below the top one
	return (e+1)*32 + int((v>>e)&31)
}

func histValue(i int) float64 {
	if i < 32 {
		return float64(i)
	}
	e := i/32 - 1
	return float64(uint64(32+i%32) << e)
}

func (h *histogram) add(d time.Duration) {
	d = max(d, 0)
	h.mu.Lock()
	h.counts[histIndex(uint64(d))]++
	h.n++
	h.max = max(h.max, d)
	h.mu.Unlock()
}

// quantile returns the q-quantile (0..1) in nanoseconds, NaN when empty.
func (h *histogram) quantile(q float64) float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 {
		return math.NaN()
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= max(rank, 1) {
			return histValue(i)
		}
	}
	return float64(h.max)
}

// runMembers is the whole client side: connect, report, wait for go, run
// the traffic, report. ready is called once connected (with the result so
// far) and returns when the traffic may start.
func runMembers(ctx context.Context, p benchParams, ready func(benchResult) error) (benchResult, error) {
	base := heapStack()
	start := time.Now()
	bm, err := connectMembers(ctx, p)
	if err != nil {
		return benchResult{}, err
	}
	defer bm.close()
	res := benchResult{Connected: bm.connected(), ConnectSeconds: time.Since(start).Seconds()}
	res.ClientHeapStack = heapStack().since(base).total()
	if err := ready(res); err != nil {
		return res, err
	}
	if p.Pairs > 0 && p.Duration > 0 {
		sent, elapsed := bm.traffic(ctx, p.Duration)
		res.Sent, res.Received, res.TrafficSeconds = sent, bm.recv.Load(), elapsed.Seconds()
		res.P50Micros = bm.hist.quantile(0.50) / 1e3
		res.P99Micros = bm.hist.quantile(0.99) / 1e3
		bm.hist.mu.Lock()
		res.MaxMicros = float64(bm.hist.max) / 1e3
		bm.hist.mu.Unlock()
	}
	if ctx.Err() != nil {
		return res, errors.Join(errors.New("interrupted"), ctx.Err())
	}
	return res, nil
}
