// Package resolved registers split DNS for a mesh with systemd-resolved:
// on the mesh's TUN interface, the mesh resolver's address as DNS server
// and the mesh suffix (and the overlay's reverse zones) as routing-only
// domains ("~home.plurenet"), with default-route off. Lookups of member
// names then go to the mesh resolver and nothing else does. Close reverts
// the interface's DNS settings.
//
// It talks to org.freedesktop.resolve1 over the D-Bus system bus
// (github.com/godbus/dbus/v5). Where there is no bus or no resolved,
// Register returns an *UnavailableError and Hint says what the user can do
// instead.
package resolved

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
)

// resolve1's bus name, object and interface.
const (
	busName = "org.freedesktop.resolve1"
	objPath = dbus.ObjectPath("/org/freedesktop/resolve1")
	manager = "org.freedesktop.resolve1.Manager"
)

// D-Bus error names Register tells apart.
const (
	errServiceUnknown = "org.freedesktop.DBus.Error.ServiceUnknown"
	errNameHasNoOwner = "org.freedesktop.DBus.Error.NameHasNoOwner"
	errUnknownMethod  = "org.freedesktop.DBus.Error.UnknownMethod"
	errAccessDenied   = "org.freedesktop.DBus.Error.AccessDenied"
	errInteractive    = "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
	errLinkBusy       = "org.freedesktop.resolve1.LinkBusy"
)

// revertTimeout bounds the RevertLink call of Close, which has no context:
// resolved answers in milliseconds, and a hung bus must not hang shutdown.
const revertTimeout = 5 * time.Second

// Linux address families as resolve1 expects them (AF_INET, AF_INET6).
const (
	afInet  = 2
	afInet6 = 10
)

// Config says what to register. Index, Servers and Domains are required.
type Config struct {
	// Index is the interface index of the mesh's TUN device.
	Index int
	// Servers are where the mesh resolver listens on that interface.
	// Ports other than 53 need systemd 246 or later (SetLinkDNSEx).
	Servers []netip.AddrPort
	// Domains are routed to Servers and to nothing else: the mesh suffix
	// and the overlay's reverse zones (names.ReverseZones), without "~".
	Domains []string
	// BusAddress is the D-Bus address to use; "" means the system bus.
	BusAddress string
	// Logger; nil means slog.Default.
	Logger *slog.Logger
}

// UnavailableError says split DNS cannot be registered because there is no
// system bus or no systemd-resolved on it. It is not a failure of the mesh:
// the caller turns it into Hint's advice.
type UnavailableError struct {
	Reason string
	Err    error
}

func (e *UnavailableError) Error() string {
	if e.Err == nil {
		return "split DNS: " + e.Reason
	}
	return fmt.Sprintf("split DNS: %s: %v", e.Reason, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// Hint tells a user without systemd-resolved how to send the lookups of
// suffix to the mesh resolver at server.
func Hint(server netip.AddrPort, suffix string) string {
	return fmt.Sprintf("point your resolver at %s for %s: e.g. dnsmasq \"server=/%s/%s#%d\", "+
		"unbound \"forward-zone: name: %s forward-addr: %s@%d\", or query it directly with \"dig @%s -p %d NAME.%s\"",
		server, suffix, suffix, server.Addr(), server.Port(), suffix, server.Addr(), server.Port(), server.Addr(), server.Port(), suffix)
}

// Link is a registration on one interface. Create it with Register.
type Link struct {
	conn  *dbus.Conn
	obj   dbus.BusObject
	index int32
	log   *slog.Logger

	mu     sync.Mutex
	closed bool
}

// Register connects to the bus and configures the interface: routing
// domains first and default-route off, so that no lookup is routed to the
// mesh resolver before its domains say which; DNSSEC and DNS-over-TLS off
// for the link (the mesh's names are synthetic and cannot be signed, and
// the resolver speaks plain DNS); then the servers. Settings that the
// running resolved does not know (before systemd 240) are skipped. On any
// other failure the link is reverted and the bus connection closed.
func Register(ctx context.Context, cfg Config) (*Link, error) {
	if cfg.Index <= 0 {
		return nil, fmt.Errorf("split DNS: interface index %d", cfg.Index)
	}
	if len(cfg.Servers) == 0 || len(cfg.Domains) == 0 {
		return nil, errors.New("split DNS: no servers or no domains to register")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	conn, err := connect(ctx, cfg.BusAddress)
	if err != nil {
		return nil, &UnavailableError{Reason: "no D-Bus system bus", Err: err}
	}
	l := &Link{conn: conn, obj: conn.Object(busName, objPath), index: int32(cfg.Index), log: cfg.Logger.With("component", "split-dns", "ifindex", cfg.Index)}
	if err := l.checkRunning(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	if err := l.configure(ctx, cfg); err != nil {
		l.revert()
		conn.Close()
		return nil, err
	}
	l.log.Debug("registered", "servers", cfg.Servers, "domains", cfg.Domains)
	return l, nil
}

// connect opens the bus connection. godbus closes a connection when the
// context given to WithContext ends; the connection must live until
// Link.Close has reverted the link, whatever happens to the caller's
// context (a node cancels its own before it closes its parts), so it gets
// ctx's values but not its cancellation. ctx still bounds every call.
func connect(ctx context.Context, address string) (*dbus.Conn, error) {
	life := dbus.WithContext(context.WithoutCancel(ctx))
	if address == "" {
		return dbus.ConnectSystemBus(life)
	}
	return dbus.Connect(address, life)
}

// checkRunning asks the bus whether resolved holds its name, rather than
// letting the first call start it by bus activation: a resolved that was
// not running is not what /etc/resolv.conf points at either.
func (l *Link) checkRunning(ctx context.Context) error {
	var has bool
	err := l.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, busName).Store(&has)
	if err != nil {
		return &UnavailableError{Reason: "asking the bus for systemd-resolved", Err: err}
	}
	if !has {
		return &UnavailableError{Reason: "systemd-resolved is not running"}
	}
	return nil
}

type linkDomain struct {
	Domain      string
	RoutingOnly bool
}

func (l *Link) configure(ctx context.Context, cfg Config) error {
	domains := make([]linkDomain, 0, len(cfg.Domains))
	for _, d := range cfg.Domains {
		domains = append(domains, linkDomain{Domain: d, RoutingOnly: true})
	}
	if err := l.call(ctx, "SetLinkDomains", domains); err != nil {
		return err
	}
	for _, opt := range []struct {
		method string
		arg    any
	}{
		{"SetLinkDefaultRoute", false},
		{"SetLinkDNSSEC", "no"},
		{"SetLinkDNSOverTLS", "no"},
	} {
		err := l.call(ctx, opt.method, opt.arg)
		if isDBusError(err, errUnknownMethod) {
			l.log.Debug("resolved too old for this setting; skipped", "method", opt.method)
			continue
		}
		if err != nil {
			return err
		}
	}
	return l.SetServers(ctx, cfg.Servers)
}

type linkDNS struct {
	Family  int32
	Address []byte
}

type linkDNSEx struct {
	Family  int32
	Address []byte
	Port    uint16
	Name    string
}

// SetServers replaces the link's DNS servers, e.g. after the collision
// rule moved the node's IPv4. Servers all on port 53 are set with
// SetLinkDNS, which every resolved has; another port needs SetLinkDNSEx.
func (l *Link) SetServers(ctx context.Context, servers []netip.AddrPort) error {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return errors.New("split DNS: link registration closed")
	}
	if len(servers) == 0 {
		return errors.New("split DNS: no servers")
	}
	plain := make([]linkDNS, 0, len(servers))
	ex := make([]linkDNSEx, 0, len(servers))
	port53 := true
	for _, s := range servers {
		a := s.Addr().Unmap()
		fam := int32(afInet6)
		if a.Is4() {
			fam = afInet
		}
		if !a.IsValid() || s.Port() == 0 {
			return fmt.Errorf("split DNS: server %s is not an address and port", s)
		}
		plain = append(plain, linkDNS{Family: fam, Address: a.AsSlice()})
		ex = append(ex, linkDNSEx{Family: fam, Address: a.AsSlice(), Port: s.Port()})
		port53 = port53 && s.Port() == 53
	}
	if port53 {
		return l.call(ctx, "SetLinkDNS", plain)
	}
	err := l.call(ctx, "SetLinkDNSEx", ex)
	if isDBusError(err, errUnknownMethod) {
		return fmt.Errorf("split DNS: systemd-resolved before 246 only takes DNS servers on port 53; serve the mesh resolver on port 53: %w", err)
	}
	return err
}

// call invokes a Manager method on the link, with errors that say what
// went wrong in the user's terms.
func (l *Link) call(ctx context.Context, method string, args ...any) error {
	err := l.obj.CallWithContext(ctx, manager+"."+method, 0, append([]any{l.index}, args...)...).Err
	switch {
	case err == nil:
		return nil
	case isDBusError(err, errServiceUnknown), isDBusError(err, errNameHasNoOwner):
		return &UnavailableError{Reason: "systemd-resolved went away", Err: err}
	case isDBusError(err, errAccessDenied), isDBusError(err, errInteractive):
		return fmt.Errorf("split DNS: %s: permission denied (run as root, or allow org.freedesktop.resolve1.set-dns-servers and set-domains in polkit): %w", method, err)
	case isDBusError(err, errLinkBusy):
		return fmt.Errorf("split DNS: %s: the interface is managed by systemd-networkd, which owns its DNS settings: %w", method, err)
	}
	return fmt.Errorf("split DNS: %s: %w", method, err)
}

func isDBusError(err error, name string) bool {
	var de dbus.Error
	if errors.As(err, &de) {
		return de.Name == name
	}
	var dp *dbus.Error
	return errors.As(err, &dp) && dp.Name == name
}

// revert asks resolved to drop every setting of the link.
func (l *Link) revert() error {
	ctx, cancel := context.WithTimeout(context.Background(), revertTimeout)
	defer cancel()
	return l.call(ctx, "RevertLink")
}

// Close reverts the link's DNS settings and closes the bus connection. It
// is idempotent. (When the node exits without Close, deleting the TUN
// interface makes resolved forget the link's settings as well.)
func (l *Link) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	err := l.revert()
	l.conn.Close()
	return err
}
