package srclimit

import (
	"testing"
	"time"
)

// TestBucketsBounded: a full table of busy buckets sends new keys to the
// shared overflow bucket; once buckets refill, a sweep makes room again.
func TestBucketsBounded(t *testing.T) {
	b := NewBuckets[int](1, 2, 4)
	now := time.Unix(1000, 0)
	for k := range 4 {
		lim := b.Get(k, now)
		lim.AllowN(now, 2) // busy: not forgotten by a sweep
	}
	over := b.Get(100, now)
	if b.Len() != 4 {
		t.Fatalf("table holds %d keys, want its bound 4", b.Len())
	}
	if over != b.Get(101, now) {
		t.Fatal("two new keys in a full table got different buckets, want the shared overflow one")
	}
	if !over.AllowN(now, 2) || over.AllowN(now, 1) {
		t.Fatal("the overflow bucket is not limited like any other")
	}
	// Known keys keep their own (empty) buckets.
	if b.Get(0, now).AllowN(now, 1) {
		t.Fatal("key 0's drained bucket was replaced")
	}
	later := now.Add(time.Hour)
	if lim := b.Get(200, later); lim == over || b.Len() != 1 {
		t.Fatalf("after the buckets refilled: %d keys, overflow=%v; want a sweep and a bucket of its own", b.Len(), lim == over)
	}
}

// TestBucketsKeep: a kept bucket survives sweeps until its time, full or
// not.
func TestBucketsKeep(t *testing.T) {
	b := NewBuckets[string](1, 1, 1)
	now := time.Unix(1000, 0)
	b.Keep("member", now.Add(time.Minute), now)
	if b.Get("stranger", now.Add(2*time.Second)) != b.overflow {
		t.Fatal("a kept bucket was swept before its time")
	}
	if _, keep, ok := b.Lookup("member"); !ok || !keep.Equal(now.Add(time.Minute)) {
		t.Fatalf("Lookup(member) = %v, %v", keep, ok)
	}
	if b.Get("stranger", now.Add(2*time.Minute)) == b.overflow {
		t.Fatal("a bucket kept until a past time was not swept")
	}
	if _, _, ok := b.Lookup("member"); ok {
		t.Fatal("member is still in the table after its time and a sweep")
	}
}
