//go:build linux

package main

import (
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"
)

// labT lets this program use netlab, whose constructors take a testing.TB
// because tests are its main user. It implements the few methods netlab
// calls; the embedded interface is nil, so a method netlab starts to use
// without this file learning of it panics loudly instead of misbehaving.
//
// Like a test, a lab runs on its own goroutine (see runLab): Fatalf and Skip
// end that goroutine with runtime.Goexit, which runs the deferred cleanups
// that tear the lab down.
type labT struct {
	testing.TB

	log io.Writer

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	skipped  string
	fatal    string
}

func (t *labT) Helper() {}

func (t *labT) Logf(format string, args ...any) {
	fmt.Fprintf(t.log, "lab: "+format+"\n", args...)
}

func (t *labT) Errorf(format string, args ...any) {
	t.mu.Lock()
	t.failed = true
	t.mu.Unlock()
	t.Logf(format, args...)
}

func (t *labT) Fatalf(format string, args ...any) {
	t.mu.Lock()
	t.failed = true
	t.fatal = fmt.Sprintf(format, args...)
	t.mu.Unlock()
	runtime.Goexit()
}

func (t *labT) Fatal(args ...any) { t.Fatalf("%s", fmt.Sprint(args...)) }

func (t *labT) Skip(args ...any) {
	t.mu.Lock()
	t.skipped = fmt.Sprint(args...)
	t.mu.Unlock()
	runtime.Goexit()
}

func (t *labT) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

func (t *labT) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

// labOutcome says how a lab run ended.
type labOutcome struct {
	Skipped string // why the lab could not run (not root, tools missing)
	Fatal   string // why setting the lab up failed
}

// runLab runs fn with a fresh labT on its own goroutine, then runs the
// cleanups fn registered (last first), also when fn ended with Fatalf or
// Skip.
func runLab(log io.Writer, fn func(t *labT)) labOutcome {
	t := &labT{log: log}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer t.runCleanups()
		fn(t)
	}()
	<-done
	t.mu.Lock()
	defer t.mu.Unlock()
	return labOutcome{Skipped: t.skipped, Fatal: t.fatal}
}

func (t *labT) runCleanups() {
	for {
		t.mu.Lock()
		n := len(t.cleanups)
		if n == 0 {
			t.mu.Unlock()
			return
		}
		f := t.cleanups[n-1]
		t.cleanups = t.cleanups[:n-1]
		t.mu.Unlock()
		f()
	}
}
