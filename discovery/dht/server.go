package dht

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"

	anacrolixdht "github.com/anacrolix/dht/v2"
	"github.com/anacrolix/dht/v2/bep44"
	"github.com/anacrolix/dht/v2/krpc"
	alog "github.com/anacrolix/log"
	"golang.org/x/time/rate"
)

// ServerConfig configures a Mainline DHT node (NewServer). The zero value
// bootstraps from the library's public routers.
type ServerConfig struct {
	// Bootstrap are the HOST:PORT of the DHT nodes to start from when the
	// routing table is empty; nil means the library's default public
	// routers (dht.DefaultGlobalBootstrapHostPorts). Checked by
	// CheckBootstrap.
	Bootstrap []string
	// SendRate bounds the KRPC datagrams the node sends per second (burst
	// the same); zero means DefaultSendRate.
	SendRate int
	Logger   *slog.Logger
}

// DefaultSendRate is the library's own default (25 per second): enough for
// a lookup every few seconds and to answer the queries a node of the public
// DHT gets.
const DefaultSendRate = 25

// MaxBootstrap bounds the bootstrap nodes given.
const MaxBootstrap = 32

// CheckBootstrap checks HOST:PORT strings for ServerConfig.Bootstrap (the
// library panics on one without a port).
func CheckBootstrap(hostPorts []string) error {
	if len(hostPorts) > MaxBootstrap {
		return fmt.Errorf("%d DHT bootstrap nodes: at most %d", len(hostPorts), MaxBootstrap)
	}
	for _, s := range hostPorts {
		host, port, err := net.SplitHostPort(s)
		if err != nil || host == "" {
			return fmt.Errorf("DHT bootstrap node %q: want HOST:PORT", s)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("DHT bootstrap node %q: port %q: want 1 to 65535", s, port)
		}
	}
	return nil
}

// NewServer starts a Mainline DHT node (anacrolix/dht) on conn with this
// package's bounded stores: peers announced to it go to a PeerStore, and
// BEP 44 items are refused (nothing here uses them, and the library's
// memory store is unbounded). The routing table is the library's: 8 nodes
// per bucket, at most 160 buckets. Close the server before conn.
func NewServer(conn net.PacketConn, cfg ServerConfig) (*anacrolixdht.Server, *PeerStore, error) {
	if err := CheckBootstrap(cfg.Bootstrap); err != nil {
		return nil, nil, err
	}
	if cfg.SendRate <= 0 {
		cfg.SendRate = DefaultSendRate
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// The library also logs through its package's default logger (for
	// instance every malformed KRPC datagram, to stderr): anyone could fill
	// a member's log at the DHT's receive rate. It goes to slog at debug
	// level too, set once, before any DHT node runs.
	libraryLog.Do(func() { alog.Default.Handlers = []alog.Handler{slogHandler{cfg.Logger}} })
	boot := cfg.Bootstrap
	ps := NewPeerStore()
	lg := alog.NewLogger("dht").WithFilterLevel(alog.Debug)
	lg.Handlers = []alog.Handler{slogHandler{cfg.Logger}}
	sc := &anacrolixdht.ServerConfig{
		Conn:       conn,
		NoSecurity: true, // members behind NATs cannot have BEP 42 ids
		StartingNodes: func() ([]anacrolixdht.Addr, error) {
			if boot == nil {
				return anacrolixdht.GlobalBootstrapAddrs("udp")
			}
			return anacrolixdht.ResolveHostPorts(boot)
		},
		// v2.23.0 dereferences the arguments of an announce_peer (and a
		// put) query without checking that it has any: one 34-byte
		// datagram from anyone crashes the process. BEP 5 queries all
		// carry arguments (at least the sender's id), so a query without
		// them is dropped here. Found by FuzzServerDatagram.
		OnQuery:     func(m *krpc.Msg, _ net.Addr) bool { return m.A != nil },
		PeerStore:   ps,
		Store:       refuseStore{},
		SendLimiter: rate.NewLimiter(rate.Limit(cfg.SendRate), cfg.SendRate),
		Logger:      lg,
	}
	s, err := anacrolixdht.NewServer(sc)
	if err != nil {
		return nil, nil, fmt.Errorf("DHT node: %w", err)
	}
	return s, ps, nil
}

var libraryLog sync.Once

// refuseStore is a bep44.Store that stores nothing.
type refuseStore struct{}

var errNoBEP44 = errors.New("this node stores no BEP 44 items")

func (refuseStore) Put(*bep44.Item) error                 { return errNoBEP44 }
func (refuseStore) Get(bep44.Target) (*bep44.Item, error) { return nil, bep44.ErrItemNotFound }
func (refuseStore) Del(bep44.Target) error                { return nil }

// slogHandler passes the library's log lines to slog at debug level: they
// are about strangers' nodes (timeouts, bad replies) and say nothing a
// user must act on.
type slogHandler struct{ log *slog.Logger }

func (h slogHandler) Handle(r alog.Record) {
	h.log.Debug("dht: "+r.Msg.String(), "level", r.Level.LogString())
}
