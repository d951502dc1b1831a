package relayproto

import "testing"

// The rate-limit charge of docs/protocol.md §1.8: each copy its length plus
// FrameOverhead, at least one copy.
func TestCharge(t *testing.T) {
	for _, c := range []struct {
		name           string
		len, receivers int
		want           int
	}{
		{"send", 1 + KeySize + 1400, 1, 1 + KeySize + 1400 + 64},
		{"empty broadcast to no one", 1 + KeySize, 0, 97},
		{"empty broadcast to 399", 1 + KeySize, 399, 399 * 97},
		{"full broadcast to 1023", MaxFrame, 1023, 1023 * (MaxFrame + 64)},
	} {
		if got := Charge(c.len, c.receivers); got != c.want {
			t.Errorf("%s: Charge(%d, %d) = %d, want %d", c.name, c.len, c.receivers, got, c.want)
		}
	}
}
