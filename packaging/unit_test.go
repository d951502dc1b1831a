package packaging_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// unitSection returns the keys of one section of a unit file, each with
// every value it was given, in order.
func unitSection(t *testing.T, path, section string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string][]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			in = line == "["+section+"]"
		case in:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: line %q", path, line)
			}
			keys[k] = append(keys[k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

// one returns the single value of key.
func one(t *testing.T, keys map[string][]string, key string) string {
	t.Helper()
	if len(keys[key]) != 1 {
		t.Fatalf("%s=: %q, want one value", key, keys[key])
	}
	return keys[key][0]
}

// unitProcess is a unit's ExecStart started the way systemd starts it:
// as the unit's User and Group, in /, with a clean environment and
// $NOTIFY_SOCKET for a Type=notify unit.
type unitProcess struct {
	cmd    *exec.Cmd
	notify *net.UnixConn
	done   chan error
}

// notifyWait bounds the wait for READY=1 or STOPPING=1: a node or relay
// is up in well under a second, so this only keeps a broken run from
// hanging.
const notifyWait = 30 * time.Second

// startUnit starts the [Service] of the unit file at path for instance
// (the %i of a template).
func startUnit(t *testing.T, path, instance string) *unitProcess {
	t.Helper()
	svc := unitSection(t, path, "Service")
	if typ := one(t, svc, "Type"); typ != "notify" {
		t.Fatalf("%s: Type=%s, want notify", path, typ)
	}
	u, err := user.Lookup(one(t, svc, "User"))
	if err != nil {
		t.Fatalf("%s: User=: %v", path, err)
	}
	g, err := user.LookupGroup(one(t, svc, "Group"))
	if err != nil {
		t.Fatalf("%s: Group=: %v", path, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(g.Gid, 10, 32)
	argv := strings.Fields(strings.ReplaceAll(one(t, svc, "ExecStart"), "%i", instance))

	// The notify socket must be writable by the unit's user, as
	// systemd's own is.
	dir, err := os.MkdirTemp("", "plurenet-notify")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := os.Chmod(sock, 0o777); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "NOTIFY_SOCKET=" + sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: ExecStart %q: %v", path, argv, err)
	}
	p := &unitProcess{cmd: cmd, notify: conn, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-p.done:
			p.done <- err
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(path), logs.String())
		}
	})
	return p
}

// next returns the next notification, failing if the process exits
// first.
func (p *unitProcess) next(t *testing.T) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		p.notify.SetReadDeadline(time.Now().Add(notifyWait))
		n, err := p.notify.Read(buf)
		if err != nil {
			got <- fmt.Sprintf("(no notification: %v)", err)
			return
		}
		got <- string(buf[:n])
	}()
	select {
	case s := <-got:
		return s
	case err := <-p.done:
		p.done <- err
		t.Fatalf("%s exited before notifying systemd: %v", p.cmd.Path, err)
		return ""
	}
}

// ready waits for READY=1 and returns the STATUS= line sent with it.
func (p *unitProcess) ready(t *testing.T) string {
	t.Helper()
	msg := p.next(t)
	m := regexp.MustCompile(`^READY=1\nSTATUS=(.*)$`).FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("first notification %q, want READY=1 with a STATUS", msg)
	}
	return m[1]
}

// stop sends SIGTERM, as systemctl stop does (KillSignal=SIGTERM), and
// checks for STOPPING=1 and a clean exit.
func (p *unitProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if msg := p.next(t); msg != "STOPPING=1" {
		t.Errorf("notification on SIGTERM %q, want STOPPING=1", msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), notifyWait)
	defer cancel()
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Errorf("%s after SIGTERM: %v, want exit status 0", p.cmd.Path, err)
		}
	case <-ctx.Done():
		t.Errorf("%s still running %v after SIGTERM", p.cmd.Path, notifyWait)
	}
}
