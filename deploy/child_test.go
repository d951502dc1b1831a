package deploy_test

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"regexp"
	"testing"
	"time"
)

// child is a process a test started: a relay, or a relay that is expected
// to refuse to start.
type child struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	stdout *lockedBuffer // the lines read so far, for what follows the ready line's
	done   chan struct{} // closed once the process has exited
	err    error         // how it exited; read only after done
}

// startChild starts cmd and waits until a line of its stdout matches ready
// or the process exits. It returns ready's first submatch, or "" when the
// process exited first (c.err says how). The process is killed at test end
// if still running, and its stderr shown if the test failed.
func startChild(t *testing.T, name string, cmd *exec.Cmd, ready *regexp.Regexp) (string, *child) {
	t.Helper()
	c := &child{cmd: cmd, stderr: &lockedBuffer{}, stdout: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = c.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	matched := make(chan string, 1)
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			_, _ = c.stdout.Write(append(sc.Bytes(), '\n'))
			if m := ready.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case matched <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		c.err = cmd.Wait()
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() || os.Getenv("RELAY_TEST_LOG") != "" {
			t.Logf("%s stderr:\n%s", name, c.stderr.String())
		}
	})
	select {
	case m := <-matched:
		return m, c
	case <-c.done:
		select {
		case m := <-matched: // said it was ready, then exited
			return m, c
		default:
			return "", c
		}
	case <-time.After(patience):
		t.Fatalf("%s neither became ready nor exited within %v\n%s", name, patience, c.stderr.String())
		return "", nil
	}
}
