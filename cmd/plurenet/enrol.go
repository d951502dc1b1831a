package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/owner"
	"github.com/plures/plurenet/internal/ownerfs"
	"github.com/plures/plurenet/internal/secretfile"
	"github.com/plures/plurenet/overlay"
)

// Files of an enrolled member's state dir: what its invite said, so later
// starts need no token.
const (
	enrolmentFile = "owned.json"
	secretFile    = "secret"
	// maxEnrolment bounds what is read back: a few relays and a
	// certificate are well under this.
	maxEnrolment = 16 << 10
)

// enrolment is owned.json.
type enrolment struct {
	Topic  string   `json:"topic"`
	Relays []string `json:"relays,omitempty"`
	Owner  string   `json:"owner"`
	// Certificate is this node's certificate (docs/protocol.md 4.3), in
	// base64: the grant from the invite bound to the node key.
	Certificate string `json:"certificate"`
}

// enrol stores an invite in the state dir: the secret (0600), and the
// topic, relays, owner key and certificate. No owner needs to be online.
// Enrolling again with the same grant is harmless; another grant in an
// enrolled state dir is refused, so a second token never silently
// replaces a membership.
func enrol(stateDir, token string) error {
	inv, err := owner.ParseInvite(token)
	if err != nil {
		return usageErrorf("--invite: %v", err)
	}
	priv, _, err := mesh.LoadOrCreateKey(stateDir)
	if err != nil {
		return err
	}
	cert := owner.Certificate{Grant: inv.Grant, Key: priv.Public()}
	e := enrolment{
		Topic:       inv.Topic,
		Relays:      inv.Relays,
		Owner:       inv.Owner.String(),
		Certificate: base64.StdEncoding.EncodeToString(owner.AppendCertificate(nil, &cert)),
	}
	if old, _, err := loadEnrolment(stateDir); err == nil {
		if old.Grant.Grant.ID != inv.Grant.ID {
			return fmt.Errorf("--invite: %s is already enrolled as %q in mesh %q: use another --state-dir for another membership", stateDir, old.Grant.Name, e.Topic)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := ownerfs.WriteFile(filepath.Join(stateDir, secretFile), append(inv.Secret, '\n')); err != nil {
		return fmt.Errorf("enrolling: %w", err)
	}
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	if err := ownerfs.WriteFile(filepath.Join(stateDir, enrolmentFile), append(b, '\n')); err != nil {
		return fmt.Errorf("enrolling: %w", err)
	}
	return nil
}

// loadEnrolment reads owned.json; an error matching fs.ErrNotExist means
// the state dir is not enrolled (an open mesh).
func loadEnrolment(stateDir string) (owner.Certificate, enrolment, error) {
	var e enrolment
	path := filepath.Join(stateDir, enrolmentFile)
	b, err := secretfile.Read(path, maxEnrolment)
	if err != nil {
		return owner.Certificate{}, e, err
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return owner.Certificate{}, e, fmt.Errorf("%s: %w", path, err)
	}
	raw, err := base64.StdEncoding.DecodeString(e.Certificate)
	if err != nil {
		return owner.Certificate{}, e, fmt.Errorf("%s: certificate: %w", path, err)
	}
	c, err := owner.ParseCertificate(raw)
	if err != nil {
		return owner.Certificate{}, e, fmt.Errorf("%s: %w", path, err)
	}
	return c, e, nil
}

// applyEnrolment enrols with --invite if given, then, if the state dir is
// enrolled, takes the mesh settings from it: they must not be given again
// differently. It returns nil for an open mesh.
func (s *upSettings) applyEnrolment(log *slog.Logger) (*overlay.Owned, []string, error) {
	stateDir := pick(s.StateDir, defaultStateDir(getenv))
	if s.Invite != "" {
		if err := enrol(stateDir, s.Invite); err != nil {
			return nil, nil, err
		}
		log.Info("enrolled from the invite", "state-dir", stateDir)
	}
	cert, e, err := loadEnrolment(stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	ownerKey, err := owner.ParsePublicKey(e.Owner)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", filepath.Join(stateDir, enrolmentFile), err)
	}
	g := cert.Grant
	pin := ""
	if g.V4.IsValid() {
		pin = g.V4.String()
	}
	for _, c := range []struct{ flag, given, enrolled string }{
		{"--topic", s.Topic, e.Topic}, {"--name", s.Name, g.Name}, {"--ip", s.IP, pin},
	} {
		if c.given != "" && c.given != c.enrolled {
			return nil, nil, usageErrorf("%s %q: this state dir is enrolled in an owned mesh where it is %q; drop %s", c.flag, c.given, c.enrolled, c.flag)
		}
	}
	if s.TopicHex != "" || s.Key != "" || s.KeyFile != "" || s.Open {
		return nil, nil, usageErrorf("this state dir is enrolled in an owned mesh: its topic and secret come from there; drop --topic-hex, --key, --key-file and --open")
	}
	s.Topic, s.Name, s.IP = e.Topic, g.Name, pin
	s.KeyFile = filepath.Join(stateDir, secretFile)
	var relays []string
	if s.Relay == "" && s.Transport != overlay.TransportSwarm && len(e.Relays) > 0 {
		s.Relay = e.Relays[0]
		relays = e.Relays
	}
	return &overlay.Owned{Owner: ownerKey, Grant: g}, relays, nil
}
