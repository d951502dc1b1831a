package relayserver

import "testing"

// TestPushRouted: a frame offered to a connection that is closing goes to
// the key's next routing target (the newer connection of a make-before-
// break switch), never lost with the old one; a full queue is final; a key
// with no connection is not found.
func TestPushRouted(t *testing.T) {
	old, cur := new(conn), new(conn)
	for _, tc := range []struct {
		name    string
		targets []*conn // what successive lookups find; nil past the end
		results map[*conn]pushResult
		want    deliverResult
		wantOK  bool
		wantTo  *conn // the connection that took it, if any
	}{
		{"taken", []*conn{cur}, map[*conn]pushResult{cur: pushed}, delivered, true, cur},
		{"old one closing: the new one takes it", []*conn{old, cur}, map[*conn]pushResult{old: queueShut, cur: pushed}, delivered, true, cur},
		{"full: dropped, not retried", []*conn{cur, cur}, map[*conn]pushResult{cur: queueFull}, dstQueueFull, true, nil},
		{"no connection", nil, nil, noSuchPeer, false, nil},
		{"the only one closing, then gone", []*conn{old}, map[*conn]pushResult{old: queueShut}, noSuchPeer, false, nil},
		{"closing at every look", []*conn{old, old, old, old, old}, map[*conn]pushResult{old: queueShut}, dstClosed, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			looks := 0
			var took *conn
			res, ok := pushRouted(func() *conn {
				defer func() { looks++ }()
				if looks < len(tc.targets) {
					return tc.targets[looks]
				}
				return nil
			}, func(c *conn) pushResult {
				r := tc.results[c]
				if r == pushed {
					took = c
				}
				return r
			})
			if res != tc.want || ok != tc.wantOK || took != tc.wantTo {
				t.Fatalf("pushRouted = %v, %v (taken by the right conn: %v), want %v, %v", res, ok, took == tc.wantTo, tc.want, tc.wantOK)
			}
			if looks > maxRouteTries {
				t.Fatalf("%d lookups, more than maxRouteTries %d", looks, maxRouteTries)
			}
		})
	}
}
