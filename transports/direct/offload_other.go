//go:build !linux

package direct

import (
	"log/slog"
	"net"
)

// Without Linux's UDP segmentation offload every datagram is its own
// message; see offload_linux.go for what these mean there.

const (
	gsoMaxSegments = 64
	maxUDPPayload4 = 1<<16 - 1 - 20 - 8
	oobSize        = 0
	recvTruncated  = 0
)

var segCmsgSize = 0

// batchWrites is false: without sendmmsg a batch is sent message by
// message (batch.go, writeEach).
const batchWrites = false

func enableOffload(*net.UDPConn) (tx, rx bool) { return false, false }

func groSegmentSize([]byte) int { return 0 }

// putSegmentSize is never called: tx offload is never on.
func putSegmentSize(b []byte, _ uint16) []byte { return b[:0] }

func gsoFailed(error) (retry, disable bool) { return false, false }

func warnGSOBroken(*slog.Logger) {}
