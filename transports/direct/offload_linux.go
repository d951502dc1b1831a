package direct

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP segmentation offload (Linux). A WireGuard flow is a run of datagrams
// of one size to one address, which is exactly what the kernel can batch:
//
//   - Send (GSO, UDP_SEGMENT, Linux 4.18): one sendmsg carries up to
//     gsoMaxSegments datagrams' payloads back to back with a control
//     message giving the segment size; the kernel (or the NIC) cuts it into
//     datagrams of that size, the last one possibly shorter. One trip
//     through the stack instead of one per datagram.
//   - Receive (GRO, UDP_GRO): the kernel hands the socket runs of datagrams
//     from one source as one buffer, with the segment size in a control
//     message; the reader splits it. A GSO send over loopback or a veth
//     arrives this way without ever being cut.
//
// wireguard-go's own socket does the same, which is why plain wireguard-go
// is the baseline the direct path is measured against.

// gsoMaxSegments is the kernel's UDP_MAX_SEGMENTS: a send of more segments
// fails (EINVAL), and GRO never coalesces more.
const gsoMaxSegments = 64

// maxUDPPayload4 is the largest UDP payload in an IPv4 datagram (65535
// minus the IP and UDP headers): the limit for a GSO send's whole buffer.
const maxUDPPayload4 = 1<<16 - 1 - 20 - 8

// oobSize is the control buffer per received message: room for the UDP_GRO
// message (a 4-byte int: 24 bytes with its header on 64-bit) with slack.
// A message whose control data was cut anyway (MSG_CTRUNC) is dropped,
// since its segment size is unknown.
const oobSize = 64

// batchWrites: a batch leaves in one sendmmsg. Linux takes an IPv4
// destination (x/net writes an AF_INET sockaddr) on the dual-stack socket.
const batchWrites = true

// segCmsgSize is the control buffer for one UDP_SEGMENT message (a u16).
var segCmsgSize = unix.CmsgSpace(2)

// recvTruncated are the flags of a received message that cannot be split
// safely: the payload or the control data did not fit.
const recvTruncated = unix.MSG_TRUNC | unix.MSG_CTRUNC

// enableOffload turns on GRO for the socket and reports which offloads it
// has. GRO is enabled only from Linux 5.12 on, where getsockopt can read
// it back: the same line wireguard-go draws, so that both data planes
// behave alike on a given kernel.
func enableOffload(c *net.UDPConn) (tx, rx bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return false, false
	}
	_ = rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		tx = err == nil && !gsoBroken(runningKernel())
		if !kernelAtLeast(5, 12) {
			return
		}
		if unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) != nil {
			return
		}
		v, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO)
		rx = err == nil && v == 1
	})
	return tx, rx
}

// kernelAtLeast reports whether the running kernel's release is at least
// major.minor.
func kernelAtLeast(major, minor int) bool {
	v, ok := runningKernel()
	return ok && (v[0] > major || v[0] == major && v[1] >= minor)
}

// runningKernel returns the running kernel's version (uname's release).
func runningKernel() (v [3]int, ok bool) {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return v, false
	}
	return parseKernelRelease(unix.ByteSliceToString(u.Release[:]))
}

// parseKernelRelease reads "major.minor[.patch]" from the front of a
// kernel release such as "6.8.0-45-generic" or "7.1-rc5"; a missing patch
// level is 0. ok is false when the release does not start with
// major.minor.
func parseKernelRelease(rel string) (v [3]int, ok bool) {
	i, n := 0, 0
	for i < len(v) {
		start := n
		for n < len(rel) && rel[n] >= '0' && rel[n] <= '9' && n-start < 6 {
			v[i] = v[i]*10 + int(rel[n]-'0')
			n++
		}
		if n == start {
			break
		}
		i++
		if n == len(rel) || rel[n] != '.' {
			break
		}
		n++
	}
	return v, i >= 2
}

// gsoBroken reports whether a kernel has the UDP GSO bug of Linux 7.0 to
// 7.1.4: segmented sends leave with mangled UDP headers and checksums on
// many drivers, and most of a flow is lost (introduced by b10b446 in
// 7.0-rc1, fixed by 78effd8 and 5f17ae0, released in 7.1.5). Impact depends
// on the driver and cannot be detected without sending, so, like
// Tailscale, we send without GSO on every kernel in that range. Distribution
// kernels that carry the fix lose only GSO's CPU savings, never packets.
func gsoBroken(v [3]int, ok bool) bool {
	if !ok {
		return false
	}
	after := func(a, b [3]int) bool { // a >= b
		for i := range a {
			if a[i] != b[i] {
				return a[i] > b[i]
			}
		}
		return true
	}
	return after(v, [3]int{7, 0, 0}) && after([3]int{7, 1, 4}, v)
}

// warnGSOBroken logs, once per process, that the running kernel is in
// gsoBroken's range and the direct path sends without segmentation.
func warnGSOBroken(log *slog.Logger) {
	v, ok := runningKernel()
	if !gsoBroken(v, ok) {
		return
	}
	gsoWarnOnce.Do(func() {
		log.Warn("direct: this kernel has the UDP GSO bug of Linux 7.0 to 7.1.4; sending without segmentation offload (update to 7.1.5 or later for full speed)",
			"kernel", fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]))
	})
}

var gsoWarnOnce sync.Once

// groSegmentSize returns the segment size the kernel reported for a
// coalesced message, or 0 if the message is a single datagram.
func groSegmentSize(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO {
			switch {
			case len(data) >= 4: // the kernel puts an int
				return int(binary.NativeEndian.Uint32(data))
			case len(data) >= 2:
				return int(binary.NativeEndian.Uint16(data))
			}
		}
		oob = rest
	}
	return 0
}

// putSegmentSize writes a UDP_SEGMENT control message for segments of size
// bytes into b, which has room for segCmsgSize bytes, and returns it.
func putSegmentSize(b []byte, size uint16) []byte {
	b = b[:segCmsgSize]
	clear(b)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], size)
	return b
}

// gsoFailed classifies a failed segmented send. retry: send the same
// datagrams again one by one; disable: the socket can never segment (the
// route's device has no checksum offload, the kernel's documented reason
// for EIO, or IPsec), so stop trying. EINVAL and EMSGSIZE mean the segment
// size does not fit the route's MTU: one by one, IP fragments them as it
// would any large datagram.
func gsoFailed(err error) (retry, disable bool) {
	switch {
	case errors.Is(err, unix.EIO):
		return true, true
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EMSGSIZE):
		return true, false
	}
	return false, false
}
