package relayserver

import "time"

// byteBudget is one connection's byte-rate limit: a token bucket of burst
// bytes refilled at rate bytes per second. Only the connection's reader
// uses it, so it needs no lock.
//
// It differs from golang.org/x/time/rate in one way that matters here: a
// charge may exceed the burst. A Broadcast is charged once per receiver
// (relayproto.Charge), so a large one in a large rendezvous can cost more
// than any burst; x/time/rate would refuse it forever. Here such a charge
// needs a full bucket and leaves it in debt, which the connection's later
// frames wait out, so the rate holds on average whatever the frame sizes,
// and what one frame can cost at once is bounded by the member cap times
// the largest frame.
type byteBudget struct {
	rate   float64 // bytes per second
	burst  float64
	tokens float64
	last   time.Time
}

func newByteBudget(rate, burst int, now time.Time) *byteBudget {
	return &byteBudget{rate: float64(rate), burst: float64(burst), tokens: float64(burst), last: now}
}

// take charges n bytes at now and reports whether the frame may pass. It
// passes when the bucket holds n bytes, or holds the whole burst when n is
// larger than that.
func (b *byteBudget) take(now time.Time, n int) bool {
	if dt := now.Sub(b.last); dt > 0 {
		b.tokens = min(b.burst, b.tokens+dt.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < min(float64(n), b.burst) {
		return false
	}
	b.tokens -= float64(n)
	return true
}
