//go:build linux

package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// soakSummary prints the soak's figures and fails t when a byte was lost
// or a connection between two running members broke.
//
// Definitions, as printed:
//   - bytes moved: received and verified (byte for byte against the
//     sender's seeded stream, and by SHA-256 per connection).
//   - bytes lost: written by a sender (accepted by its socket) but never
//     verified by the receiver, on connections that failed. Connections
//     the soak itself closed because one of their ends was about to be
//     restarted are counted apart ("cut by restarts"): their unverified
//     bytes died with the process, as they would in any restart.
//   - TCP resets: connections between two running members that ended in
//     an error (ECONNRESET, EPIPE, an end of stream before the sender
//     finished, a count or SHA-256 mismatch); timeouts (no byte for
//     soakStallLimit) and corrupt data are shown apart and fail the soak
//     too.
//   - failovers: path changes seen in the members' `plurenet status
//     --json`, polled every soakPoll (a change and its undoing between
//     two polls is not seen).
//   - false failovers: direct -> relay moves of a pair when neither
//     member's router had UDP cut (up to soakCutGrace after the restore)
//     and neither member was being restarted (up to soakRestartGrace after
//     it was back).
//   - longest stall: the longest gap between two reads that delivered
//     bytes on one connection (or from its start to its first byte).
func soakSummary(t *testing.T, d time.Duration, counts map[soakKind]int, flows []*soakFlow, windows []soakWindow, moves []soakMove) {
	t.Helper()
	expected := func(mv soakMove) bool {
		for _, w := range windows {
			if (w.member == mv.observer || w.member == mv.peer) && w.from.Before(mv.at) && w.to.After(mv.prev) {
				return true
			}
		}
		return false
	}
	var failovers, recoveries, other, falses int
	var falseList []string
	for _, mv := range moves {
		switch {
		case mv.from == pathDirect && strings.HasPrefix(mv.to, "relay"):
			failovers++
			if !expected(mv) {
				falses++
				falseList = append(falseList, fmt.Sprintf("%s's path to %s %s -> %s between +%v and +%v",
					mv.observer, mv.peer, mv.from, mv.to, mv.prev.Sub(flows[0].began).Round(time.Second), mv.at.Sub(flows[0].began).Round(time.Second)))
			}
		case mv.to == pathDirect:
			recoveries++
		default:
			other++
		}
	}
	var moved, written, lost, cutBytes, conns, cutConns, resets, timeouts, corrupt int64
	var stall time.Duration
	var stallWhere string
	var b strings.Builder
	for _, f := range flows {
		moved += f.moved.Load()
		written += f.written.Load()
		lost += f.lost.Load()
		cutBytes += f.cutBytes.Load()
		conns += f.conns.Load()
		cutConns += f.cutConns.Load()
		resets += f.resets.Load()
		timeouts += f.timeouts.Load()
		corrupt += f.corrupt.Load()
		f.mu.Lock()
		if f.stall > stall {
			stall, stallWhere = f.stall, fmt.Sprintf("%s, ended at +%v", f.name, f.stallAt.Round(time.Second))
		}
		fmt.Fprintf(&b, "  flow %-5s moved %12d  connections %4d ok, %d cut  resets %d  timeouts %d  corrupt %d  longest stall %v\n",
			f.name, f.moved.Load(), f.conns.Load(), f.cutConns.Load(), f.resets.Load(), f.timeouts.Load(), f.corrupt.Load(), f.stall.Round(time.Millisecond))
		if f.lastError != "" {
			fmt.Fprintf(&b, "    last error: %s\n", f.lastError)
		}
		f.mu.Unlock()
	}
	fmt.Fprintf(&b, "soak: %v, 3 members (kernel TUN, --transport auto) behind NAT routers, %d flows at %s/s\n", d, len(flows), mib(soakRate))
	fmt.Fprintf(&b, "events: %d relay drains (SIGTERM, restart), %d UDP cuts of %v, %d conntrack flushes, %d member restarts\n",
		counts[soakDrain], counts[soakCutUDP], soakCutFor, counts[soakFlush], counts[soakRestart])
	fmt.Fprintf(&b, "bytes moved:     %d (%s; %s written)\n", moved, mib(moved), mib(written))
	fmt.Fprintf(&b, "bytes lost:      %d\n", lost)
	fmt.Fprintf(&b, "TCP resets:      %d (and %d timeouts, %d corrupt)\n", resets, timeouts, corrupt)
	fmt.Fprintf(&b, "connections:     %d verified, %d cut by restarts (%d bytes unverified with them: expected)\n", conns, cutConns, cutBytes)
	fmt.Fprintf(&b, "failovers:       %d direct -> relay, %d back to direct, %d other path changes\n", failovers, recoveries, other)
	fmt.Fprintf(&b, "false failovers: %d\n", falses)
	for _, s := range falseList {
		fmt.Fprintf(&b, "  %s\n", s)
	}
	fmt.Fprintf(&b, "longest stall:   %v (%s)\n", stall.Round(time.Millisecond), stallWhere)
	t.Logf("\n%s", b.String())
	if lost > 0 || resets > 0 || timeouts > 0 || corrupt > 0 {
		t.Errorf("soak: %d bytes lost, %d TCP resets, %d timeouts, %d corrupt connections; want none", lost, resets, timeouts, corrupt)
	}
	for _, f := range flows {
		if f.conns.Load() == 0 {
			t.Errorf("soak flow %s never completed a connection", f.name)
		}
	}
}
