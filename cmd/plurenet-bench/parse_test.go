//go:build linux

package main

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/plures/plurenet/internal/netlab"
)

func TestParseIperf3(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    float64
		wantErr string
	}{
		{"ok", `{"end":{"sum_received":{"bytes":1250000,"bits_per_second":2e9}}}`, 2e9, ""},
		{"error report", `{"error":"unable to connect to server: Connection refused"}`, 0, "unable to connect"},
		{"nothing received", `{"end":{"sum_received":{"bytes":0,"bits_per_second":0}}}`, 0, "got nothing"},
		{"not JSON", `iperf3: error`, 0, "iperf3 report"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := netlab.ParseIperf3([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestParsePingAvg(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want time.Duration
		ok   bool
	}{
		{"iputils", "--- 10.0.0.2 ping statistics ---\n20 packets transmitted, 20 received, 0% packet loss, time 3800ms\nrtt min/avg/max/mdev = 0.041/0.057/0.093/0.012 ms\n", 57 * time.Microsecond, true},
		{"overlapping replies", "rtt min/avg/max/mdev = 0.288/19.485/282.971/62.694 ms, pipe 2\n", 19485 * time.Microsecond, true},
		{"busybox", "round-trip min/avg/max = 0.101/1.500/2.000 ms\n", 1500 * time.Microsecond, true},
		{"all lost", "20 packets transmitted, 0 received, 100% packet loss\n", 0, false},
		{"seconds unit", "rtt min/avg/max/mdev = 1/2/3/4 s\n", 0, false},
		{"garbage numbers", "rtt min/avg/max/mdev = a/b/c/d ms\n", 0, false},
		{"negative", "rtt min/avg/max/mdev = 1/-2/3/4 ms\n", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePingAvg(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && (got-tt.want > time.Microsecond || tt.want-got > time.Microsecond) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseGoBench(t *testing.T) {
	out := `goos: linux
goarch: amd64
pkg: github.com/plures/plurenet/transports/relay
cpu: AMD EPYC
BenchmarkRelayThroughput-2   	  500000	      4000 ns/op	 350.00 MB/s	     120 B/op	       2 allocs/op
BenchmarkTCPPipe-2           	 5000000	       350 ns/op	4000.00 MB/s	       0 B/op	       0 allocs/op
BenchmarkRelayThroughputTLS-2	  300000	      9000 ns/op	 155.00 MB/s	         4.300 cpu-s/GB	    1470 B/op	       2 allocs/op
BenchmarkRelayThroughputTLS-2	  300000	      5000 ns/op	 280.00 MB/s	         4.100 cpu-s/GB	    1470 B/op	       2 allocs/op
BenchmarkRelayThroughputTLS-2	  300000	      7000 ns/op	 200.00 MB/s	         4.200 cpu-s/GB	    1470 B/op	       2 allocs/op
BenchmarkNoBytes             	     100	   1000000 ns/op
PASS
ok  	github.com/plures/plurenet/transports/relay	9.1s
`
	got, err := parseGoBench(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]goBenchResult{
		"BenchmarkRelayThroughput": {Name: "BenchmarkRelayThroughput", NsPerOp: 4000, MBPerSec: 350},
		"BenchmarkTCPPipe":         {Name: "BenchmarkTCPPipe", NsPerOp: 350, MBPerSec: 4000},
		"BenchmarkNoBytes":         {Name: "BenchmarkNoBytes", NsPerOp: 1e6},
		// run three times: the median run by MB/s
		"BenchmarkRelayThroughputTLS": {Name: "BenchmarkRelayThroughputTLS", NsPerOp: 7000, MBPerSec: 200, CPUPerGB: 4.2},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d results %+v, want %d", len(got), got, len(want))
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %+v, want %+v", k, got[k], w)
		}
	}
	if _, err := parseGoBench("BenchmarkBroken-2 10 fast ns/op\n"); err == nil {
		t.Error("a benchmark line without a number of ns/op parsed")
	}
}

func TestParseVmHWM(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int64
		ok   bool
	}{
		{"ok", "Name:\tplurenet\nVmPeak:\t 1234 kB\nVmHWM:\t   20480 kB\nVmRSS:\t 100 kB\n", 20480 << 10, true},
		{"missing", "Name:\tplurenet\n", 0, false},
		{"bad unit", "VmHWM:\t 20 MB\n", 0, false},
		{"bad number", "VmHWM:\t many kB\n", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseVmHWM(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("got %d, %v; want %d, ok=%v", got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestTableRatios(t *testing.T) {
	var tb table
	tb.pipe = tb.add(&row{section: sectionLoopback, label: "pipe", bps: 8e9})
	tb.add(&row{section: sectionLoopback, label: "relay", bps: 2e9})
	tb.veth = tb.add(&row{section: sectionLab, label: "(a) veth", bps: 10e9, rtt: 50 * time.Microsecond})
	tb.wg = tb.add(&row{section: sectionLab, label: "(b) wg", bps: 2e9, rss: []procRSS{{"wg-a", 10 << 20}, {"wg-b", 12 << 20}}})
	tb.add(&row{section: sectionLab, label: "(c) plurenet", bps: 1e9, rtt: 1500 * time.Microsecond})
	tb.add(&row{section: sectionLab, label: "(d) broken", err: errNoWireguardGo})
	tb.footer = []string{"a footer line"}
	var b strings.Builder
	if err := tb.write(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	wantFields := map[string][]string{
		"loopback relay":   {"2.00 Gbit/s", "0.25"},
		"lab (a) veth":     {"10.00 Gbit/s", "1.00", "5.00", "0.050 ms"},
		"lab (b) wg":       {"0.20", "1.00", "wg-a 10.0, wg-b 12.0 MiB"},
		"lab (c) plurenet": {"1.00 Gbit/s", "0.10", "0.50", "1.500 ms"},
		"lab (d) broken":   {"FAILED", "no wireguard-go"},
		"loopback pipe":    {"8.00 Gbit/s", "1.00"},
		"a footer line":    nil,
		"ROW":              {"THROUGHPUT", "/PIPE", "/VETH", "/WG-GO", "RTT AVG", "PEAK RSS"},
	}
	for prefix, fields := range wantFields {
		found := false
		for _, l := range lines {
			if !strings.HasPrefix(l, prefix) {
				continue
			}
			found = true
			for _, f := range fields {
				if !strings.Contains(l, f) {
					t.Errorf("line %q lacks %q", l, f)
				}
			}
		}
		if !found {
			t.Errorf("no line starts with %q in:\n%s", prefix, b.String())
		}
	}
}

func TestCondense(t *testing.T) {
	in := "time=1 level=INFO msg=up\n" +
		"time=2 level=WARN msg=\"queue full\"\n" +
		"time=3 level=WARN msg=\"queue full\"\n" +
		"time=4 level=WARN msg=\"queue full\"\n" +
		"plain\nplain\n" +
		"time=5 level=INFO msg=down\n"
	want := "time=1 level=INFO msg=up\n" +
		"time=2 level=WARN msg=\"queue full\"\n" +
		"    [the line above 2 more times]\n" +
		"plain\n" +
		"    [the line above 1 more times]\n" +
		"time=5 level=INFO msg=down"
	if got := condense(in); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestParsePingReplies(t *testing.T) {
	at := func(sec, us int64) time.Time { return time.Unix(sec, us*1000) }
	tests := []struct {
		name string
		in   string
		want []pingReply
	}{
		{"iputils -D", "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n" +
			"[1795607105.022291] 64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.026 ms\n" +
			"[1795607105.125178] 64 bytes from 10.0.0.2: icmp_seq=2 ttl=64 time=12.5 ms\n",
			[]pingReply{{at(1795607105, 22291), 26 * time.Microsecond}, {at(1795607105, 125178), 12500 * time.Microsecond}}},
		{"errors and summary skipped", "[1795607105.022291] From 10.0.0.1 icmp_seq=1 Destination Host Unreachable\n" +
			"[1795607105.122291] no answer yet for icmp_seq=2\n" +
			"[1795607106.000001] 64 bytes from 10.0.0.2: icmp_seq=3 ttl=64 time=1.0 ms\n" +
			"rtt min/avg/max/mdev = 1/1/1/0 ms\n",
			[]pingReply{{at(1795607106, 1), time.Millisecond}}},
		{"half-written last line", "[1795607105.022291] 64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.0", nil},
		{"no -D stamp", "64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.026 ms\n", nil},
		{"bad stamp", "[17956x7105.02] 64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.026 ms\n", nil},
		{"bad rtt", "[1795607105.022291] 64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=-1 ms\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parsePingReplies(tt.in)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d replies %+v, want %d", len(got), got, len(tt.want))
			}
			for i := range got {
				if !got[i].at.Equal(tt.want[i].at) || got[i].rtt != tt.want[i].rtt {
					t.Errorf("reply %d: got %v rtt %v, want %v rtt %v", i, got[i].at, got[i].rtt, tt.want[i].at, tt.want[i].rtt)
				}
			}
		})
	}
}

func TestParseJoinedAt(t *testing.T) {
	log := "time=2026-11-29T16:29:37.700Z level=INFO msg=\"direct path listening\" addr=10.0.0.2:41641\n" +
		"time=2026-11-29T16:29:37.786Z level=INFO msg=\"member joined\" peer=PiUS89ZG name=nb via=relay:primary\n" +
		"time=2026-11-29T16:29:39.000Z level=INFO msg=\"member joined\" peer=Xy name=nc via=relay:primary\n"
	at, ok := parseJoinedAt(log)
	want := time.Date(2026, 11, 29, 16, 29, 37, 786e6, time.UTC)
	if !ok || !at.Equal(want) {
		t.Fatalf("parseJoinedAt = %v, %v; want %v (the first join)", at, ok, want)
	}
	for _, bad := range []string{"", "level=INFO msg=\"member joined\"\n", "time=yesterday msg=\"member joined\"\n", "time=2026-11-29T16:29:37.786Z msg=\"member left\"\n"} {
		if at, ok := parseJoinedAt(bad); ok {
			t.Errorf("parseJoinedAt(%q) = %v, want none", bad, at)
		}
	}
}

// TestMedianResult: the embedded rows show the middle transfer by
// throughput, whatever order the runs came in.
func TestMedianResult(t *testing.T) {
	rs := []workerResult{{Bytes: 100, Seconds: 1}, {Bytes: 100, Seconds: 4}, {Bytes: 100, Seconds: 2}}
	if got := medianResult(rs, workerResult.bps); got.Seconds != 2 {
		t.Fatalf("median of 1 s, 4 s, 2 s transfers: %v s, want 2 s", got.Seconds)
	}
	if rs[1].Seconds != 4 {
		t.Fatal("medianResult reordered its argument")
	}
}

func TestPairedRatio(t *testing.T) {
	mb := func(v ...float64) []goBenchResult {
		rs := make([]goBenchResult, len(v))
		for i, x := range v {
			rs[i] = goBenchResult{MBPerSec: x}
		}
		return rs
	}
	tests := []struct {
		name     string
		num, den []goBenchResult
		want     float64
	}{
		// The medians alone would give 300/400 = 0.75; round by round
		// the ratios are 0.9, 0.8, 0.75 (a slow round slows both).
		{"paired, not medians", mb(360, 200, 300), mb(400, 250, 400), 0.8},
		{"one round", mb(100), mb(400), 0.25},
		{"even count takes the upper", mb(1, 2, 3, 4), mb(10, 10, 10, 10), 0.3},
		{"lengths differ", mb(1, 2), mb(1), 0},
		{"empty", nil, nil, 0},
		{"zero denominator", mb(1, 2), mb(1, 0), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pairedRatio(tt.num, tt.den); math.Abs(got-tt.want) > 1e-9 {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}
