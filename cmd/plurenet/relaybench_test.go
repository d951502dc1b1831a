package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRelayBenchInProcess(t *testing.T) {
	var out, errb bytes.Buffer
	prof := filepath.Join(t.TempDir(), "heap.prof")
	code := run([]string{"relay-bench", "--members", "40", "--pairs", "3", "--duration", "300ms", "--size", "256", "--in-process-clients", "--memprofile", prof}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"connections held:   40 of 40", "forwarded:", "delivery latency:", "KiB per member"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
	for _, f := range []string{prof, prof + ".goroutine"} {
		if fi, err := os.Stat(f); err != nil || fi.Size() == 0 {
			t.Errorf("--memprofile: %s missing or empty (%v)", f, err)
		}
	}
}

func TestRelayBenchFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--members", "0"},
		{"--members", "10", "--pairs", "6"},
		{"--duration", (time.Hour).String()},
		{"--size", "1"},
		{"--relay", "http://example.com"},
		{"--worker"},
		{"--relay", "ws://127.0.0.1:1/v1/relay", "--memprofile", "heap.prof"},
	} {
		var out, errb bytes.Buffer
		if code := run(append([]string{"relay-bench"}, args...), &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)\n%s", args, code, errb.String())
		}
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want float64 // ns
	}{{0.5, 500e3}, {0.99, 990e3}} {
		got := h.quantile(c.q)
		if got < c.want*0.96 || got > c.want*1.04 {
			t.Errorf("quantile(%v) = %v ns, want %v within 4%%", c.q, got, c.want)
		}
	}
}
