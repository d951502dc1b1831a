//go:build linux

package main

// The soak's transfers (lab_soak_test.go): one continuous TCP stream per
// ordered pair of members, over their overlay addresses, verified byte for
// byte and by SHA-256 as it arrives.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// soakRate is what each flow sends per second: six flows make
	// 12 MiB/s (about 100 Mbit/s) through the mesh, a steady load the
	// 2-core lab machine carries alongside the members, the relay and the
	// status polls without starving any of them.
	soakRate = 2 << 20
	// soakSegment is how much one TCP connection carries before the
	// sender closes it and dials again: a new connection every 16 s per
	// flow also exercises connection setup across every path change.
	soakSegment = 32 << 20
	// soakChunk is the size of one paced write and one read.
	soakChunk = 32 << 10
	// soakStallLimit is how long a connection may go without a byte
	// before the soak calls it dead: far beyond a fallback to the relay
	// (about 3 s) or TCP's retransmission backoff after a relay restart,
	// short of TCP's own give-up (about 15 min).
	soakStallLimit = 90 * time.Second
	// soakDialWait bounds one dial (and the accept behind it); a dial
	// that fails is retried every soakRedial while the flow runs.
	soakDialWait = 10 * time.Second
	soakRedial   = time.Second
	// soakAckSize is the receiver's answer after the sender's end of
	// stream: the byte count (8 bytes) and the SHA-256 of what it read.
	soakAckSize = 8 + sha256.Size
)

// errCorrupt is a received byte that differs from the one sent.
var errCorrupt = errors.New("received data differs from the sent stream")

// soakFlow is the stream from one member to another. Its counters are
// updated by its goroutines and read by the soak's reports.
type soakFlow struct {
	name     string
	id       uint32
	from, to *labNode
	port     uint16
	began    time.Time // the soak's start, for the offsets in logs
	logf     func(format string, args ...any)

	moved    atomic.Int64 // bytes received and verified
	written  atomic.Int64 // bytes the sender's writes accepted
	lost     atomic.Int64 // written but never verified, on connections that failed
	cutBytes atomic.Int64 // written but not verified, on connections the soak cut for a restart
	conns    atomic.Int64 // connections completed with every byte verified
	cutConns atomic.Int64 // connections the soak cut because an end was restarted
	resets   atomic.Int64 // connections that failed with ECONNRESET, EPIPE, an early EOF or another socket error
	timeouts atomic.Int64 // connections that went soakStallLimit without a byte
	corrupt  atomic.Int64 // connections whose data or SHA-256 differed

	mu        sync.Mutex
	held      bool      // no new connections: an end is being restarted
	cur       *soakConn // the connection in progress, if any
	stall     time.Duration
	stallAt   time.Duration // when the longest stall ended, from began
	lastError string
	ln        net.Listener
	accepted  chan soakAccepted
}

// soakConn is one TCP connection of a flow: both ends live in this process.
type soakConn struct {
	seq        uint64
	send, recv net.Conn
	cut        atomic.Bool // the soak closed it for a restart
	verified   atomic.Int64
	written    atomic.Int64
}

type soakAccepted struct {
	seq  uint64
	conn net.Conn
}

// listen opens the flow's listener in the receiver's namespace, on every
// address so that it outlives the receiver's TUN across a restart.
func (f *soakFlow) listen() error {
	f.accepted = make(chan soakAccepted)
	return f.to.host.Do(func() (err error) {
		f.ln, err = net.Listen("tcp", fmt.Sprintf(":%d", f.port))
		return err
	})
}

// acceptLoop hands each accepted connection, with the sequence number its
// sender wrote first, to the dialing goroutine. It returns when ctx ends.
func (f *soakFlow) acceptLoop(ctx context.Context) {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return // the listener was closed
		}
		var hdr [8]byte
		c.SetReadDeadline(time.Now().Add(soakDialWait))
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			c.Close() // a dial the sender gave up on
			continue
		}
		c.SetReadDeadline(time.Time{})
		select {
		case f.accepted <- soakAccepted{binary.BigEndian.Uint64(hdr[:]), c}:
		case <-ctx.Done():
			c.Close()
			return
		}
	}
}

// run keeps one connection at a time going until send ends; a connection
// in progress then finishes its stream and is verified. abort (done
// after send) gives up on a connection that cannot finish.
func (f *soakFlow) run(send, abort context.Context) {
	for seq := uint64(1); send.Err() == nil; seq++ {
		sc := f.dial(send, seq)
		if sc == nil {
			return
		}
		f.transfer(send, abort, sc)
	}
}

// dial connects the flow's sender to its receiver, retrying while the
// flow is held or the receiver cannot be reached. It returns nil once
// ctx ends.
func (f *soakFlow) dial(ctx context.Context, seq uint64) *soakConn {
	dst := netip.AddrPortFrom(f.to.ip4, f.port).String()
	for ctx.Err() == nil {
		f.mu.Lock()
		held := f.held
		f.mu.Unlock()
		if !held {
			if sc, err := f.connect(ctx, dst, seq); err == nil {
				return sc
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(soakRedial):
		}
	}
	return nil
}

func (f *soakFlow) connect(ctx context.Context, dst string, seq uint64) (*soakConn, error) {
	var send net.Conn
	if err := f.from.host.Do(func() (err error) {
		d := net.Dialer{Timeout: soakDialWait}
		send, err = d.DialContext(ctx, "tcp", dst)
		return err
	}); err != nil {
		return nil, err
	}
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], seq)
	send.SetWriteDeadline(time.Now().Add(soakDialWait))
	if _, err := send.Write(hdr[:]); err != nil {
		send.Close()
		return nil, err
	}
	wait := time.NewTimer(soakDialWait)
	defer wait.Stop()
	for {
		select {
		case a := <-f.accepted:
			if a.seq != seq {
				a.conn.Close() // left over from an earlier attempt
				continue
			}
			sc := &soakConn{seq: seq, send: send, recv: a.conn}
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.held { // a restart began while we dialed
				send.Close()
				a.conn.Close()
				return nil, errors.New("flow held")
			}
			f.cur = sc
			return sc, nil
		case <-wait.C:
			send.Close()
			return nil, errors.New("no accept")
		case <-ctx.Done():
			send.Close()
			return nil, ctx.Err()
		}
	}
}

// hold stops new connections and cuts the one in progress: an end of the
// flow is about to be restarted. release lets the flow dial again.
func (f *soakFlow) hold() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held = true
	if sc := f.cur; sc != nil {
		sc.cut.Store(true)
		sc.send.Close()
		sc.recv.Close()
	}
}

func (f *soakFlow) release() {
	f.mu.Lock()
	f.held = false
	f.mu.Unlock()
}

// seed is the pseudo-random stream of connection seq of flow id.
func seed(id uint32, seq uint64) [32]byte {
	var s [32]byte
	binary.BigEndian.PutUint32(s[:4], id)
	binary.BigEndian.PutUint64(s[4:12], seq)
	return s
}

// transfer runs one connection to its end and books the outcome.
func (f *soakFlow) transfer(send, abort context.Context, sc *soakConn) {
	recvDone := make(chan error, 1)
	go func() { recvDone <- f.receive(sc) }()
	sendErr := f.sendStream(send, sc)
	if sendErr != nil {
		// Unblock the receiver; its error is a consequence.
		sc.recv.Close()
	}
	var recvErr error
	select {
	case recvErr = <-recvDone:
	case <-abort.Done():
		sc.send.Close()
		sc.recv.Close()
		recvErr = <-recvDone
	}
	sc.send.Close()
	sc.recv.Close()
	f.mu.Lock()
	f.cur = nil
	f.mu.Unlock()

	unverified := sc.written.Load() - sc.verified.Load()
	err := sendErr
	if err == nil || errors.Is(recvErr, errCorrupt) {
		err = recvErr
	}
	switch {
	case sc.cut.Load():
		f.cutConns.Add(1)
		f.cutBytes.Add(unverified)
		return
	case err == nil && unverified == 0:
		f.conns.Add(1)
		return
	case err == nil:
		err = fmt.Errorf("%d bytes written, %d verified", sc.written.Load(), sc.verified.Load())
		f.resets.Add(1)
	case errors.Is(err, errCorrupt):
		f.corrupt.Add(1)
	case errors.Is(err, os.ErrDeadlineExceeded):
		f.timeouts.Add(1)
	default:
		f.resets.Add(1)
	}
	f.lost.Add(max(unverified, 0))
	msg := fmt.Sprintf("%s connection %d failed at +%v after %d bytes written, %d verified: %v",
		f.name, sc.seq, time.Since(f.began).Round(time.Second), sc.written.Load(), sc.verified.Load(), err)
	f.mu.Lock()
	f.lastError = msg
	f.mu.Unlock()
	f.logf("%s", msg)
}

// sendStream writes the connection's stream at soakRate until soakSegment
// bytes or until ctx ends, closes its half, and checks the receiver's
// count and SHA-256 against what it wrote.
func (f *soakFlow) sendStream(ctx context.Context, sc *soakConn) error {
	src := rand.NewChaCha8(seed(f.id, sc.seq))
	sum := sha256.New()
	buf := make([]byte, soakChunk)
	next := time.Now()
	for n := int64(0); n < soakSegment && ctx.Err() == nil; {
		if d := time.Until(next); d > 0 {
			select {
			case <-ctx.Done():
				continue
			case <-time.After(d):
			}
		}
		src.Read(buf)
		sc.send.SetWriteDeadline(time.Now().Add(soakStallLimit))
		w, err := sc.send.Write(buf)
		sum.Write(buf[:w])
		n += int64(w)
		sc.written.Add(int64(w))
		f.written.Add(int64(w))
		if err != nil {
			return fmt.Errorf("writing: %w", err)
		}
		next = next.Add(time.Duration(w) * time.Second / soakRate)
		// After a stall, resume at the rate rather than in a burst.
		if time.Since(next) > time.Second {
			next = time.Now()
		}
	}
	if err := sc.send.(*net.TCPConn).CloseWrite(); err != nil {
		return fmt.Errorf("closing the stream: %w", err)
	}
	var ack [soakAckSize]byte
	sc.send.SetReadDeadline(time.Now().Add(soakStallLimit))
	if _, err := io.ReadFull(sc.send, ack[:]); err != nil {
		return fmt.Errorf("reading the receiver's count and SHA-256: %w", err)
	}
	if got, want := int64(binary.BigEndian.Uint64(ack[:8])), sc.written.Load(); got != want {
		return fmt.Errorf("receiver read %d bytes, %d written", got, want)
	}
	if !bytes.Equal(ack[8:], sum.Sum(nil)) {
		return fmt.Errorf("SHA-256: %w", errCorrupt)
	}
	return nil
}

// receive reads the stream, compares each byte with the expected stream
// and feeds SHA-256, and at the sender's end of stream answers with its
// count and hash.
func (f *soakFlow) receive(sc *soakConn) error {
	want := rand.NewChaCha8(seed(f.id, sc.seq))
	var sum hash.Hash = sha256.New()
	buf := make([]byte, soakChunk)
	exp := make([]byte, soakChunk)
	last := time.Now()
	var n int64
	for {
		sc.recv.SetReadDeadline(time.Now().Add(soakStallLimit))
		r, err := sc.recv.Read(buf)
		if r > 0 {
			now := time.Now()
			f.noteStall(now.Sub(last), now)
			last = now
			want.Read(exp[:r])
			if !bytes.Equal(buf[:r], exp[:r]) {
				return fmt.Errorf("at offset %d: %w", n+int64(firstDiff(buf[:r], exp[:r])), errCorrupt)
			}
			sum.Write(buf[:r])
			n += int64(r)
			sc.verified.Add(int64(r))
			f.moved.Add(int64(r))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && !sc.cut.Load() {
				f.noteStall(time.Since(last), time.Now())
			}
			return fmt.Errorf("reading: %w", err)
		}
	}
	var ack [soakAckSize]byte
	binary.BigEndian.PutUint64(ack[:8], uint64(n))
	copy(ack[8:], sum.Sum(nil))
	sc.recv.SetWriteDeadline(time.Now().Add(soakStallLimit))
	if _, err := sc.recv.Write(ack[:]); err != nil {
		return fmt.Errorf("writing the count and SHA-256: %w", err)
	}
	return nil
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

// noteStall records a gap of d between verified bytes that ended at end.
func (f *soakFlow) noteStall(d time.Duration, end time.Time) {
	f.mu.Lock()
	if d > f.stall {
		f.stall, f.stallAt = d, end.Sub(f.began)
	}
	f.mu.Unlock()
}
