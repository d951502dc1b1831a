package relay

import (
	"math/rand/v2"
	"time"
)

// backoff computes reconnect delays: exponential growth from min to max, with
// full jitter (a uniform draw between zero and the ceiling) so that the many
// nodes a relay restart disconnects do not all come back in the same
// instant.
type backoff struct {
	min, max time.Duration
	attempt  int
}

// maxBackoffShift keeps min<<attempt from overflowing; 2^30 times any
// sensible min is far beyond any max.
const maxBackoffShift = 30

// next returns the delay before the next attempt and grows the ceiling.
func (b *backoff) next() time.Duration {
	ceiling := b.max
	if b.attempt < maxBackoffShift {
		if c := b.min << b.attempt; c > 0 && c < b.max {
			ceiling = c
		}
	}
	b.attempt++
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling + 1)
}

// reset starts over from min after a connection proved healthy.
func (b *backoff) reset() { b.attempt = 0 }
