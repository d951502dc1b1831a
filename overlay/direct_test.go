package overlay

import (
	"io"
	"testing"
	"time"
)

// TestAutoGoesDirect starts two nodes in auto mode: traffic flows at once
// (over the relay until ICE succeeds) and settles on the direct UDP path,
// which status describes. The network-lab tests cover the move of a live
// connection between paths.
func TestAutoGoesDirect(t *testing.T) {
	r := startRelay(t, "")
	a := startNode(t, "alpha", []string{r.URL}, nodeOpts{auto: true})
	b := startNode(t, "beta", []string{r.URL}, nodeOpts{auto: true})
	c, s := tcpPair(t, a, b, 7300)
	echo := func() string {
		t.Helper()
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1)
		if _, err := io.ReadFull(s, buf); err != nil {
			t.Fatal(err)
		}
		return a.Status().Members[0].Path
	}
	start := time.Now()
	first := echo()
	t.Logf("first packet went by %s", first)
	for path := first; path != "direct"; path = echo() {
		if time.Since(start) > testTimeout {
			st := a.Status().Members[0]
			t.Fatalf("never went direct: path %q, direct state %+v", path, st.Direct)
		}
		time.Sleep(50 * time.Millisecond)
	}
	st := a.Status().Members[0]
	t.Logf("direct after %v: %+v", time.Since(start).Round(time.Millisecond), st.Direct)
	if st.Direct == nil || st.Direct.State != "direct" || st.Direct.Remote == "" {
		t.Fatalf("status does not describe the direct path: %+v", st.Direct)
	}
}
