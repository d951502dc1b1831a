package relayserver

import "testing"

func TestSendQueue(t *testing.T) {
	type op struct {
		size  int
		force bool
		want  pushResult
		// together: pushed with pushForwards as this many frames of
		// size each, all or none (a split batch)
		together int
	}
	tests := []struct {
		name              string
		maxFrames, maxB   int
		ops               []op
		wantFrames, wantB int
	}{
		{"within caps", 3, 100, []op{{10, false, pushed, 0}, {20, false, pushed, 0}}, 2, 30},
		{"frame cap drops the newest", 2, 100, []op{{1, false, pushed, 0}, {1, false, pushed, 0}, {1, false, queueFull, 0}}, 2, 2},
		{"byte cap drops the newest", 10, 25, []op{{20, false, pushed, 0}, {10, false, queueFull, 0}, {5, false, pushed, 0}}, 2, 25},
		{"force skips caps", 1, 10, []op{{10, false, pushed, 0}, {10, true, pushed, 0}, {1, false, queueFull, 0}}, 2, 20},
		{"split batch fits", 4, 100, []op{{10, false, pushed, 3}, {10, false, pushed, 0}}, 4, 40},
		{"split batch over the frame cap: none", 4, 100, []op{{10, false, pushed, 0}, {10, false, queueFull, 4}, {10, false, pushed, 3}}, 4, 40},
		{"split batch over the byte cap: none", 10, 50, []op{{20, false, pushed, 0}, {10, false, queueFull, 4}, {10, false, pushed, 3}}, 4, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var peak int
			q := newSendQueue(tt.maxFrames, tt.maxB, func(n int) { peak = max(peak, n) })
			for i, o := range tt.ops {
				if o.together > 0 {
					var frames [][]byte
					for range o.together {
						frames = append(frames, make([]byte, o.size))
					}
					if got := q.pushForwards(frames); got != o.want {
						t.Fatalf("pushForwards %d: %v, want %v", i, got, o.want)
					}
					continue
				}
				if got := q.push(make([]byte, o.size), o.force); got != o.want {
					t.Fatalf("push %d: %v, want %v", i, got, o.want)
				}
			}
			if f, b := q.len(); f != tt.wantFrames || b != tt.wantB {
				t.Fatalf("len = %d frames %d bytes, want %d, %d", f, b, tt.wantFrames, tt.wantB)
			}
			if peak != tt.wantB {
				t.Fatalf("peak %d, want %d", peak, tt.wantB)
			}
		})
	}
}

// Frames being written still count, so taking them does not make room.
func TestSendQueueCountsInFlight(t *testing.T) {
	q := newSendQueue(2, 100, nil)
	q.push([]byte("a"), false)
	q.push([]byte("b"), false)
	batch := q.take(nil)
	if len(batch) != 2 {
		t.Fatalf("took %d", len(batch))
	}
	if q.push([]byte("c"), false) != queueFull {
		t.Fatal("push succeeded while two frames were in flight")
	}
	q.written(1)
	if q.push([]byte("c"), false) != pushed {
		t.Fatal("push failed after a frame was written")
	}
	q.shutdown()
	if q.push([]byte("d"), true) != queueShut {
		t.Fatal("push succeeded after shutdown")
	}
	if n := q.discard(); n != 1 {
		t.Fatalf("discarded %d, want 1", n)
	}
	q.written(1)
	if f, b := q.len(); f != 0 || b != 0 {
		t.Fatalf("after all: %d frames %d bytes", f, b)
	}
}

// release lets go of the storage of an empty queue only.
func TestSendQueueRelease(t *testing.T) {
	q := newSendQueue(100, 1<<20, nil)
	for range 50 {
		q.push([]byte("x"), false)
	}
	q.release()
	if len(q.entries) != 50 {
		t.Fatalf("release dropped waiting entries: %d left", len(q.entries))
	}
	q.take(nil)
	if cap(q.entries) == 0 {
		t.Fatal("take dropped the storage (the test would prove nothing)")
	}
	q.release()
	if q.entries != nil {
		t.Fatalf("an empty queue kept storage for %d entries", cap(q.entries))
	}
	if q.push([]byte("y"), false) != pushed {
		t.Fatal("push after release failed")
	}
}
