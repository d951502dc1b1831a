package mesh

import (
	"encoding/binary"
	"time"

	"crypto/sha256"
	"golang.org/x/crypto/hkdf"
	"io"
)

// The mesh on the Mainline DHT (docs/protocol.md 2.10). Members announce
// themselves under an info-hash only holders of the secret can compute, so
// nobody else can find the mesh's members there, and it changes every day,
// so that an observer of the DHT cannot link one day's announcements to the
// next day's without the secret.
const (
	// labelDHTDay derives one day's info-hash from Keys.DHT.
	labelDHTDay = "plurenet v2 dht day"

	// DHTDay is the life of one info-hash: days since 1970-01-01 UTC.
	DHTDay = 24 * time.Hour

	// DHTOverlap is how long before and after midnight (UTC) a member
	// also uses the neighbouring day's info-hash, so that members whose
	// clocks differ (at most MaxClockSkew) or who announced just before
	// midnight still meet.
	DHTOverlap = time.Hour
)

// DHTInfoHashSize is the size of a Mainline DHT info-hash.
const DHTInfoHashSize = 20

// DHTInfoHash is the mesh's info-hash on day (days since 1970-01-01 UTC):
// HKDF-Expand(Keys.DHT, "plurenet v2 dht day" || day as 8 bytes big
// endian, 20).
func DHTInfoHash(k Keys, day int64) [DHTInfoHashSize]byte {
	info := binary.BigEndian.AppendUint64([]byte(labelDHTDay), uint64(day))
	var h [DHTInfoHashSize]byte
	if _, err := io.ReadFull(hkdf.Expand(sha256.New, k.DHT[:], info), h[:]); err != nil {
		panic("mesh: hkdf expand: " + err.Error()) // 20 bytes cannot fail
	}
	return h
}

// DHTDayOf is the day number of t.
func DHTDayOf(t time.Time) int64 {
	return t.Unix() / int64(DHTDay/time.Second) // Unix time has no leap seconds: every day is 86400 s
}

// DHTInfoHashes are the info-hashes a member looks up and announces at
// now: today's, and within DHTOverlap of midnight the neighbouring day's
// too (yesterday's just after, tomorrow's just before).
func DHTInfoHashes(k Keys, now time.Time) [][DHTInfoHashSize]byte {
	day := DHTDayOf(now)
	out := [][DHTInfoHashSize]byte{DHTInfoHash(k, day)}
	into := now.Sub(time.Unix(day*int64(DHTDay/time.Second), 0))
	if into < DHTOverlap {
		out = append(out, DHTInfoHash(k, day-1))
	}
	if DHTDay-into <= DHTOverlap {
		out = append(out, DHTInfoHash(k, day+1))
	}
	return out
}
