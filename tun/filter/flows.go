package filter

import (
	"hash/maphash"
	"time"
)

// Flow table bounds. 4,096 flows of 32 bytes each is 128 KiB per node:
// far more concurrent connections than a personal machine opens to the
// mesh, small enough to allocate once. Buckets of 4 make eviction O(1):
// a new flow replaces an empty, expired or else the least recently seen
// slot of its bucket, never scanning the table.
const (
	flowSlots = 4096
	flowWays  = 4
)

// Idle times after which a flow's replies are checked against the policy
// again. TCP's outlives the 2-hour keepalive default, so an idle SSH
// session with keepalives stays open; UDP's is Linux conntrack's for a
// UDP stream (nf_conntrack_udp_timeout_stream, 120 s, rounded up); echo
// replies come within seconds or not at all.
const (
	tcpIdle  = 3 * time.Hour
	udpIdle  = 3 * time.Minute
	icmpIdle = 30 * time.Second
)

// flowKey names a flow from this node's side: protocol, this node's port,
// the member's address and port (for ICMP echo, both ports are the echo
// identifier).
type flowKey struct {
	remote       [16]byte
	local, rport uint16
	proto        uint8
}

type flowSlot struct {
	key  flowKey
	seen int64 // monotonic nanoseconds (Device.now); 0: empty
}

// flowTable is a fixed-size set-associative table of the flows this node
// opened. The bucket hash is seeded per table, so a member cannot aim its
// flows at one bucket. Not safe for concurrent use: Device holds its
// mutex.
type flowTable struct {
	seed  maphash.Seed
	slots [flowSlots]flowSlot
}

func newFlowTable() *flowTable { return &flowTable{seed: maphash.MakeSeed()} }

func idleFor(proto uint8) int64 {
	switch proto {
	case protoTCP:
		return int64(tcpIdle)
	case protoUDP:
		return int64(udpIdle)
	}
	return int64(icmpIdle)
}

func (t *flowTable) bucket(k *flowKey) []flowSlot {
	var b [21]byte
	copy(b[:16], k.remote[:])
	b[16], b[17] = byte(k.local>>8), byte(k.local)
	b[18], b[19] = byte(k.rport>>8), byte(k.rport)
	b[20] = k.proto
	i := int(maphash.Bytes(t.seed, b[:])%(flowSlots/flowWays)) * flowWays
	return t.slots[i : i+flowWays]
}

// touch reports whether k is a live flow, and marks it seen at now.
func (t *flowTable) touch(k flowKey, now int64) bool {
	b := t.bucket(&k)
	for i := range b {
		s := &b[i]
		if s.seen != 0 && s.key == k {
			if now-s.seen > idleFor(k.proto) {
				s.seen = 0
				return false
			}
			s.seen = now
			return true
		}
	}
	return false
}

// add records k as seen at now, evicting the bucket's stalest slot if the
// bucket is full.
func (t *flowTable) add(k flowKey, now int64) {
	b := t.bucket(&k)
	for i := range b {
		if b[i].seen != 0 && b[i].key == k {
			b[i].seen = now
			return
		}
	}
	victim := 0
	for i := range b {
		s := &b[i]
		if s.seen == 0 || now-s.seen > idleFor(s.key.proto) {
			victim = i
			break
		}
		if s.seen < b[victim].seen {
			victim = i
		}
	}
	b[victim] = flowSlot{key: k, seen: now}
}
