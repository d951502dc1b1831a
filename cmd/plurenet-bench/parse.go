//go:build linux

package main

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// parsePingAvg finds the average round-trip time in ping's summary line
// ("rtt min/avg/max/mdev = 0.041/0.057/0.093/0.012 ms").
func parsePingAvg(out string) (time.Duration, error) {
	for line := range strings.Lines(out) {
		_, stats, ok := strings.Cut(line, "min/avg/max")
		if !ok {
			continue
		}
		_, rest, ok := strings.Cut(stats, "= ")
		if !ok {
			break
		}
		// "0.041/0.057/0.093/0.012 ms", maybe followed by ", pipe 2"
		// when replies overlapped.
		words := strings.Fields(rest)
		if len(words) < 2 || strings.TrimSuffix(words[1], ",") != "ms" {
			break
		}
		fields := strings.Split(words[0], "/")
		if len(fields) < 2 {
			break
		}
		ms, err := strconv.ParseFloat(fields[1], 64)
		if err != nil || ms < 0 {
			break
		}
		return time.Duration(ms * float64(time.Millisecond)), nil
	}
	return 0, fmt.Errorf("ping: no rtt summary in its output: %q", out)
}

// goBenchResult is one line of "go test -bench" output.
type goBenchResult struct {
	Name     string
	NsPerOp  float64
	MBPerSec float64 // 10^6 bytes per second, as the testing package counts
	CPUPerGB float64 // the relay benchmarks' cpu-s/GB metric; 0 if absent
}

// parseGoBench reads "go test -bench" output and returns its benchmark
// lines by name, without the -GOMAXPROCS suffix. Of a benchmark run more
// than once (-count), it returns the run with the median MB/s.
func parseGoBench(out string) (map[string]goBenchResult, error) {
	all := make(map[string][]goBenchResult)
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		r := goBenchResult{Name: f[0]}
		if i := strings.LastIndexByte(r.Name, '-'); i > 0 {
			if _, err := strconv.Atoi(r.Name[i+1:]); err == nil {
				r.Name = r.Name[:i]
			}
		}
		for i := 2; i+1 < len(f); i++ {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				r.NsPerOp = v
			case "MB/s":
				r.MBPerSec = v
			case "cpu-s/GB":
				r.CPUPerGB = v
			}
		}
		if r.NsPerOp == 0 {
			return nil, fmt.Errorf("go bench line without ns/op: %q", sc.Text())
		}
		all[r.Name] = append(all[r.Name], r)
	}
	res := make(map[string]goBenchResult, len(all))
	for name, runs := range all {
		res[name] = medianGoBench(runs)
	}
	return res, sc.Err()
}

// medianGoBench returns the run in the middle of runs by MB/s (the upper
// one of an even count). runs must not be empty.
func medianGoBench(runs []goBenchResult) goBenchResult {
	s := slices.Clone(runs)
	slices.SortFunc(s, func(a, b goBenchResult) int { return cmp.Compare(a.MBPerSec, b.MBPerSec) })
	return s[len(s)/2]
}

// pairedRatio returns the median of num[i].MBPerSec / den[i].MBPerSec:
// runs made side by side in one round are compared with each other, so
// that a machine that drifts between rounds moves both. It is 0 when the
// lists differ in length or are empty, or a denominator is 0.
func pairedRatio(num, den []goBenchResult) float64 {
	if len(num) != len(den) || len(num) == 0 {
		return 0
	}
	ratios := make([]float64, len(num))
	for i := range num {
		if den[i].MBPerSec == 0 {
			return 0
		}
		ratios[i] = num[i].MBPerSec / den[i].MBPerSec
	}
	slices.Sort(ratios)
	return ratios[len(ratios)/2]
}

// peakRSS returns a process's peak resident set size (VmHWM in
// /proc/PID/status) in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("peak RSS of %d: %w", pid, err)
	}
	return parseVmHWM(string(b))
}

// resetPeakRSS sets a process's peak RSS (VmHWM) to its RSS now (Linux
// 4.0+: "5" in /proc/PID/clear_refs), so that peakRSS later reads the peak
// since this moment.
func resetPeakRSS(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("resetting the peak RSS of %d: %w", pid, err)
	}
	return nil
}

func parseVmHWM(status string) (int64, error) {
	for line := range strings.Lines(status) {
		v, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		v, unit, _ := strings.Cut(strings.TrimSpace(v), " ")
		kb, err := strconv.ParseInt(v, 10, 64)
		if err != nil || strings.TrimSpace(unit) != "kB" {
			return 0, fmt.Errorf("VmHWM line %q", strings.TrimSpace(line))
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmHWM line in /proc/PID/status")
}

// pingReply is one echo reply of "ping -D": when it arrived (wall clock)
// and its round-trip time, so that when its request left is at minus rtt.
type pingReply struct {
	at  time.Time
	rtt time.Duration
}

// sent is when the reply's echo request left, to within ping's rounding.
func (r pingReply) sent() time.Time { return r.at.Add(-r.rtt) }

// parsePingReplies reads the reply lines of "ping -D" output
// ("[1718000000.123456] 64 bytes from 10.0.0.2: icmp_seq=5 ttl=64
// time=0.512 ms") in order. Other lines (the header, errors, "no answer
// yet", the summary) are skipped, as is a half-written last line.
func parsePingReplies(out string) []pingReply {
	var replies []pingReply
	for line := range strings.Lines(out) {
		if !strings.HasSuffix(line, "\n") {
			break // ping is still writing it
		}
		stamp, rest, ok := strings.Cut(strings.TrimPrefix(line, "["), "] ")
		if !ok || !strings.HasPrefix(line, "[") || !strings.Contains(rest, " bytes from ") {
			continue
		}
		_, rtt, ok := strings.Cut(rest, " time=")
		if !ok {
			continue
		}
		at, err := parseUnixMicro(stamp)
		if err != nil {
			continue
		}
		rttFields := strings.Fields(rtt)
		if len(rttFields) != 2 || rttFields[1] != "ms" {
			continue
		}
		ms, err := strconv.ParseFloat(rttFields[0], 64)
		if err != nil || ms < 0 {
			continue
		}
		replies = append(replies, pingReply{at: at, rtt: time.Duration(ms * float64(time.Millisecond))})
	}
	return replies
}

// parseUnixMicro parses "SECONDS.MICROSECONDS", ping -D's time stamp.
func parseUnixMicro(s string) (time.Time, error) {
	secs, frac, ok := strings.Cut(s, ".")
	if !ok || len(frac) == 0 || len(frac) > 9 {
		return time.Time{}, fmt.Errorf("time stamp %q: want SECONDS.FRACTION", s)
	}
	sec, err := strconv.ParseInt(secs, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, fmt.Errorf("time stamp %q: seconds", s)
	}
	ns, err := strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
	if err != nil || ns < 0 {
		return time.Time{}, fmt.Errorf("time stamp %q: fraction", s)
	}
	return time.Unix(sec, ns), nil
}

// parseJoinedAt returns the time of the first "member joined" line in a
// node's log (slog text: "time=2026-01-02T15:04:05.123Z level=INFO
// msg=\"member joined\" ...").
func parseJoinedAt(out string) (time.Time, bool) {
	for line := range strings.Lines(out) {
		if !strings.Contains(line, `msg="member joined"`) {
			continue
		}
		stamp, ok := strings.CutPrefix(strings.Fields(line)[0], "time=")
		if !ok {
			continue
		}
		if at, err := time.Parse(time.RFC3339Nano, stamp); err == nil {
			return at, true
		}
	}
	return time.Time{}, false
}
