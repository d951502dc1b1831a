package relayserver

import "github.com/plures/plurenet/internal/relayproto"

// snapshot is a joiner's view of who is present, written as one PeerPresent
// frame per key. It is queued as a single entry so that it obeys the send
// queue's caps like any frame, yet costs the relay no per-key allocation:
// keys is the room's copy-on-write key list (room.snapshotKeys), shared by
// every joiner that took the same version and never modified, and each
// frame is built in the writer's scratch buffer as it is written. Frames
// queued after the snapshot (presence changes, data) are written after all
// of it, so a PeerGone can never overtake the PeerPresent it cancels.
type snapshot struct {
	keys []relayproto.Key
	skip relayproto.Key // the joiner's own key, present in keys when it has another connection
}

// snapshotFrameSize is the size of one PeerPresent frame.
const snapshotFrameSize = 1 + relayproto.KeySize

// size is the bytes the snapshot's frames will take, counted against the
// queue's byte cap until they are written.
func (s *snapshot) size() int { return len(s.keys) * snapshotFrameSize }

// each calls write with every frame of the snapshot, in order, built in
// scratch; it stops at the first error and returns it.
func (s *snapshot) each(scratch []byte, write func([]byte) error) error {
	for _, k := range s.keys {
		if k == s.skip {
			continue
		}
		if err := write(relayproto.AppendPeerPresent(scratch[:0], k)); err != nil {
			return err
		}
	}
	return nil
}
