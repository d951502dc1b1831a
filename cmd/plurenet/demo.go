package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/plures/plurenet/overlay"
	"github.com/plures/plurenet/relayserver"
)

func init() {
	register(command{name: "demo", summary: "run a relay and two nodes in this process and talk TCP between them", run: runDemo})
}

// demoTimeout bounds the whole demo, so that it fails rather than hangs.
const demoTimeout = 60 * time.Second

func runDemo(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("demo")
	verbose := fs.Bool("v", false, "log what the nodes do")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, cancel := context.WithTimeout(ctx, demoTimeout)
	defer cancel()

	// 1. A relay on loopback.
	srv, err := relayserver.New(relayserver.Config{Logger: log})
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	defer hs.Close()
	relayURL := "ws://" + ln.Addr().String()
	// The relay's STUN responder, which the direct path asks for this
	// node's address.
	stunConn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer stunConn.Close()
	go relayserver.ServeSTUN(ctx, stunConn, log)
	fmt.Fprintf(stdout, "relay    listening on %s, STUN on udp %s\n", relayURL, stunConn.LocalAddr())

	// 2. Two nodes of one mesh, each with its own state dir.
	dir, err := os.MkdirTemp("", "plurenet-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	mk := func(name string) (*overlay.Node, error) {
		return overlay.New(overlay.Config{
			StateDir: dir + "/" + name,
			Topic:    "plurenet-demo",
			Secret:   "demo secret: use plurenet key generate for a real mesh",
			Name:     name,
			Relays:   []string{relayURL},
			// auto: the relay at once, the direct UDP path when ICE
			// succeeds. Loopback only, so the demo touches no network.
			STUNServers: []string{stunConn.LocalAddr().String()},
			ListenAddr:  netip.MustParseAddr("127.0.0.1"),
			Logger:      log.With("node", name),
		})
	}
	alpha, err := mk("alpha")
	if err != nil {
		return err
	}
	defer alpha.Close()
	beta, err := mk("beta")
	if err != nil {
		return err
	}
	defer beta.Close()
	for _, n := range []*overlay.Node{alpha, beta} {
		v4, v6 := n.Addrs()
		fmt.Fprintf(stdout, "%-8s overlay IPv4 %-15s IPv6 %s\n", n.Status().Name, v4, v6)
	}

	// 3. alpha serves TCP on its overlay IP; beta finds alpha by name and
	// dials it. Neither knows which transport carries the bytes.
	l, err := alpha.Listen("tcp", ":7000")
	if err != nil {
		return err
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil {
					fmt.Fprintf(c, "alpha heard: %s", strings.ToUpper(line))
				}
			}()
		}
	}()
	ip, err := beta.WaitMember(ctx, "alpha")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "beta     found alpha at %s after %v\n", ip, time.Since(start).Round(time.Millisecond))
	c, err := beta.Dial(ctx, "tcp", net.JoinHostPort(ip.String(), "7000"))
	if err != nil {
		return fmt.Errorf("beta dialing alpha: %w", err)
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	fmt.Fprintf(c, "hello over the mesh\n")
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("beta reading alpha's reply: %w", err)
	}
	fmt.Fprintf(stdout, "beta     sent \"hello over the mesh\" to %s:7000, got %q after %v\n",
		ip, strings.TrimSpace(reply), time.Since(start).Round(time.Millisecond))
	report := func() string {
		m := beta.Status().Members[0]
		fmt.Fprintf(stdout, "beta     -> %s (%s): carried by %s, WireGuard handshake done %v, %d bytes out, %d bytes in\n",
			m.Name, m.IPv4, m.Path, !m.LastHandshake.IsZero(), m.TxBytes, m.RxBytes)
		return m.Path
	}
	if !strings.Contains(reply, "HELLO OVER THE MESH") {
		return errors.New("the reply did not carry the message")
	}
	// auto moves the same connection to the direct path once ICE has
	// checked it; keep talking until it has.
	first := report()
	for path := first; path != "direct"; path = report() {
		if ctx.Err() != nil {
			return fmt.Errorf("the direct path never came up: %w", ctx.Err())
		}
		time.Sleep(500 * time.Millisecond)
		c, err := beta.Dial(ctx, "tcp", net.JoinHostPort(ip.String(), "7000"))
		if err != nil {
			return fmt.Errorf("beta dialing alpha again: %w", err)
		}
		fmt.Fprintf(c, "again\n")
		_, err = bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil {
			return fmt.Errorf("beta reading alpha's reply: %w", err)
		}
	}
	d := beta.Status().Members[0].Direct
	fmt.Fprintf(stdout, "beta     -> alpha went direct after %v: UDP to %s, RTT %.2f ms\n", time.Since(start).Round(time.Millisecond), d.Remote, d.RTTMs)
	fmt.Fprintf(stdout, "demo ok: TCP between two overlay IPs over WireGuard; the first exchange went by %s, the path is now direct\n", first)
	return nil
}
