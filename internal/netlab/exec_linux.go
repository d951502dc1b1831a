package netlab

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netns"
)

// Run returns a command that will run name with args inside the host's
// namespace (through `ip netns exec`), like exec.CommandContext: the caller
// sets Stdout/Stdin as needed and calls Run, Output or Start on it. Use
// Start instead for background processes the lab should stop at cleanup.
func (h *Host) Run(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.nsName, name}, args...)...)
	// If the test binary dies, its children must not linger in (and keep
	// alive) the lab's namespaces. (The signal fires when the forking OS
	// thread exits; the Go runtime ends threads only when a goroutine
	// exits while locked to one, which the lab avoids on its own paths.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Start starts name with args in the background inside the host's namespace.
// The process is killed when ctx is done or at the lab's cleanup, whichever
// comes first; its combined output (the last maxProcOutput bytes) is logged
// if the test fails. Start fails the test if the process cannot be started.
func (h *Host) Start(ctx context.Context, name string, args ...string) *Proc {
	h.lab.t.Helper()
	p := &Proc{cmd: h.Run(ctx, name, args...), done: make(chan struct{}), out: &tailBuffer{max: maxProcOutput}}
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		h.lab.t.Fatalf("netlab: starting %s in %s: %v", name, h.name, err)
	}
	h.lab.mu.Lock()
	h.lab.procs = append(h.lab.procs, p)
	h.lab.mu.Unlock()
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p
}

// maxProcOutput bounds the output kept per background process: enough for
// the last screens of a log, small enough for a chatty server.
const maxProcOutput = 64 << 10

// Proc is a background process started by Host.Start.
type Proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid after done is closed
	out  *tailBuffer
}

// Pid is the process ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns its exit error.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// Kill kills the process and waits for it to exit. It is safe to call more
// than once and after the process has exited.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	// The process may exit between the check and the signal: harmless.
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Output returns the tail of the process's combined stdout and stderr.
func (p *Proc) Output() string { return p.out.String() }

func (p *Proc) String() string { return strings.Join(p.cmd.Args, " ") }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// Do runs fn on an OS thread that has entered the host's namespace, and
// returns fn's error. Sockets fn opens (net.Listen, net.Dial, ...) belong to
// the namespace for their whole life, so the test can use them afterwards
// from any goroutine. Goroutines fn starts do NOT run in the namespace, and
// fn runs on its own goroutine: it must not call t.FailNow (t.Fatal).
func (h *Host) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netlab: %s: current namespace: %w", h.name, err)
			return
		}
		defer orig.Close()
		if err := netns.Set(h.ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netlab: entering %s: %w", h.nsName, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime destroys it when this
			// goroutine exits, so no other goroutine inherits the
			// namespace.
			errc <- errors.Join(ferr, fmt.Errorf("netlab: leaving %s: %w", h.nsName, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
