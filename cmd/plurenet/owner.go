package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/plures/plurenet/internal/mesh"
	"github.com/plures/plurenet/internal/nodekey"
	"github.com/plures/plurenet/internal/owner"
	"github.com/plures/plurenet/internal/ownerfs"
	"github.com/plures/plurenet/internal/secretfile"
	"github.com/plures/plurenet/overlay"
	"github.com/plures/plurenet/transports/relay"
)

func init() {
	register(command{name: "owner", summary: "create an owned mesh: \"owner init\" makes the owner key and the mesh secret", run: runOwner})
	register(command{name: "invite", summary: "print an invite token for one member of an owned mesh", run: runInvite})
	register(command{name: "revoke", summary: "revoke a member of an owned mesh (by name or key) through a running member", run: runRevoke})
	register(command{name: "policy", summary: "sign access rules of an owned mesh and hand them to a running member (\"policy set\")", run: runPolicy})
}

// Files of the owner directory. owner.key never leaves it.
const (
	ownerKeyFile   = "owner.key"
	ownerStateFile = "owner.json"
	maxOwnerState  = 1 << 20
)

// ownerState is owner.json: the mesh's settings, the grants issued (so
// that revoke can name a member) and the current revocation list.
type ownerState struct {
	Topic  string   `json:"topic"`
	Relays []string `json:"relays,omitempty"`
	Owner  string   `json:"owner"`
	Grants []issued `json:"grants"`
	// Revocations is the list last signed, and its version.
	Revocations struct {
		Version uint64   `json:"version"`
		Grants  []string `json:"grants"` // hex grant IDs
		Keys    []string `json:"keys"`   // node keys
	} `json:"revocations"`
	// Policy is the access policy last signed (its canonical JSON), and
	// its version; version 0: none yet.
	Policy struct {
		Version uint64          `json:"version"`
		Rules   json.RawMessage `json:"rules,omitempty"`
	} `json:"policy"`
	// Rotation is the version of the last secret rotation signed
	// (rotate.go); the new secret replaces the one in the owner dir.
	Rotation struct {
		Version uint64 `json:"version"`
	} `json:"rotation"`
}

// issued records one grant the owner signed.
type issued struct {
	Name string `json:"name"`
	ID   string `json:"id"` // hex
	IP   string `json:"ip,omitempty"`
}

func ownerDirUsage() string {
	return "owner directory (owner key, mesh secret and owner state; keep it private and backed up)"
}

func runOwner(_ context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "init" {
		return usageErrorf("want \"owner init --owner-dir DIR --topic T [--relay URL ...]\"")
	}
	fs := newFlagSet("owner init")
	dir := fs.String("owner-dir", "", ownerDirUsage())
	topic := fs.String("topic", "", "the mesh topic")
	var relays listValue
	fs.Var(&relays, "relay", "relay URL members meet at (repeatable, at most 4; none for --transport swarm)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if *dir == "" || *topic == "" {
		return usageErrorf("--owner-dir and --topic are required")
	}
	if len(relays) > owner.MaxInviteRelays {
		return usageErrorf("%d relays, at most %d", len(relays), owner.MaxInviteRelays)
	}
	st := ownerState{Topic: *topic, Grants: []issued{}}
	for _, r := range relays {
		u, err := relay.ParseURL(r)
		if err != nil {
			return usageErrorf("--relay: %v", err)
		}
		st.Relays = append(st.Relays, u.String())
	}
	if _, err := os.Stat(filepath.Join(*dir, ownerKeyFile)); err == nil {
		return fmt.Errorf("%s already holds an owner key: one owner directory per mesh (use another --owner-dir)", *dir)
	}
	if err := ownerfs.MkdirAll(*dir); err != nil {
		return fmt.Errorf("owner dir: %w", err)
	}
	if err := secretfile.CheckDir(*dir); err != nil {
		return fmt.Errorf("owner dir: %w", err)
	}
	k, err := owner.NewKey()
	if err != nil {
		return err
	}
	secret, err := mesh.GenerateSecret()
	if err != nil {
		return err
	}
	st.Owner = k.Public().String()
	if err := ownerfs.WriteFile(filepath.Join(*dir, ownerKeyFile), []byte(base64.StdEncoding.EncodeToString(k.Seed())+"\n")); err != nil {
		return err
	}
	if err := ownerfs.WriteFile(filepath.Join(*dir, secretFile), []byte(secret+"\n")); err != nil {
		return err
	}
	if err := saveOwnerState(*dir, &st); err != nil {
		return err
	}
	fmt.Fprintln(stdout, k.Public())
	return nil
}

// loadOwner reads the owner key and state of dir.
func loadOwner(dir string) (owner.Key, *ownerState, error) {
	if dir == "" {
		return owner.Key{}, nil, usageErrorf("--owner-dir is required")
	}
	line, err := secretfile.ReadLine(filepath.Join(dir, ownerKeyFile), 1024)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return owner.Key{}, nil, fmt.Errorf("%s holds no owner key: run \"plurenet owner init --owner-dir %s --topic T\" first", dir, dir)
		}
		return owner.Key{}, nil, err
	}
	seed, err := base64.StdEncoding.DecodeString(line)
	if err != nil {
		return owner.Key{}, nil, fmt.Errorf("%s: %w", filepath.Join(dir, ownerKeyFile), err)
	}
	k, err := owner.KeyFromSeed(seed)
	if err != nil {
		return owner.Key{}, nil, err
	}
	b, err := secretfile.Read(filepath.Join(dir, ownerStateFile), maxOwnerState)
	if err != nil {
		return owner.Key{}, nil, err
	}
	var st ownerState
	if err := json.Unmarshal(b, &st); err != nil {
		return owner.Key{}, nil, fmt.Errorf("%s: %w", filepath.Join(dir, ownerStateFile), err)
	}
	if st.Owner != k.Public().String() {
		return owner.Key{}, nil, fmt.Errorf("%s names owner %s, but %s holds the key of %s", ownerStateFile, st.Owner, ownerKeyFile, k.Public())
	}
	return k, &st, nil
}

func saveOwnerState(dir string, st *ownerState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return ownerfs.WriteFile(filepath.Join(dir, ownerStateFile), append(b, '\n'))
}

func runInvite(_ context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("invite")
	dir := fs.String("owner-dir", "", ownerDirUsage())
	name := fs.String("name", "", "the member's name (unique in the mesh)")
	tags := fs.String("tags", "", "comma-separated tags for access rules, e.g. dev,laptops")
	ip := fs.String("ip", "", "pin the member's IPv4 (inside the mesh prefix)")
	expires := fs.Duration("expires", 0, "the membership ends after this long (e.g. 72h; default: never, revoke ends it)")
	multi := fs.Bool("multi-use", false, "let several machines enrol with this token (default: single use)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	k, st, err := loadOwner(*dir)
	if err != nil {
		return err
	}
	if *name == "" {
		return usageErrorf("--name is required")
	}
	g := owner.Grant{Topic: mesh.TopicID(st.Topic), Name: *name, Tags: splitList(*tags), MultiUse: *multi}
	if g.ID, err = owner.NewGrantID(); err != nil {
		return err
	}
	if *ip != "" {
		a, err := netip.ParseAddr(*ip)
		if err != nil || !a.Is4() || !mesh.DefaultV4Prefix.Contains(a) {
			return usageErrorf("--ip %q: want an IPv4 address inside %s", *ip, mesh.DefaultV4Prefix)
		}
		g.V4 = a
	}
	if *expires < 0 {
		return usageErrorf("--expires %v: want a positive duration", *expires)
	}
	if *expires > 0 {
		g.NotAfter = time.Now().Add(*expires).Truncate(time.Second)
	}
	// Names and pins are unique by the owner's word: members trust them.
	for _, is := range st.Grants {
		if is.Name == g.Name && !st.revokedGrant(is.ID) {
			return usageErrorf("--name %q: a grant for that name exists (revoke it first, or pick another name)", g.Name)
		}
		if g.V4.IsValid() && is.IP == g.V4.String() && !st.revokedGrant(is.ID) {
			return usageErrorf("--ip %s: already pinned to %q", g.V4, is.Name)
		}
	}
	sg, err := k.SignGrant(g)
	if err != nil {
		return usageErrorf("%v", err)
	}
	secret, err := secretfile.ReadLine(filepath.Join(*dir, secretFile), 1024)
	if err != nil {
		return err
	}
	inv := owner.Invite{Topic: st.Topic, Secret: []byte(secret), Relays: st.Relays, Owner: k.Public(), Grant: sg}
	token, err := inv.Token()
	if err != nil {
		return err
	}
	rec := issued{Name: g.Name, ID: hex.EncodeToString(g.ID[:])}
	if g.V4.IsValid() {
		rec.IP = g.V4.String()
	}
	st.Grants = append(st.Grants, rec)
	if err := saveOwnerState(*dir, st); err != nil {
		return err
	}
	fmt.Fprintln(stdout, token)
	return nil
}

func (st *ownerState) revokedGrant(id string) bool { return slices.Contains(st.Revocations.Grants, id) }

// revokeTimeout bounds the hand-over to the running member.
const revokeTimeout = 10 * time.Second

// documentFlags parses the flags of a command that signs an owner
// document and hands it to a running member: --owner-dir, --state-dir and
// one argument after them (want says what it is).
func documentFlags(name, what string, args []string, want string) (dir, stateDir, arg string, err error) {
	fs := newFlagSet(name)
	d := fs.String("owner-dir", "", ownerDirUsage())
	sd := fs.String("state-dir", "", "state dir of a running member, which takes the "+what+" and spreads it")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", "", "", err
		}
		return "", "", "", fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() != 1 {
		return "", "", "", usageErrorf("want %s (after the flags)", want)
	}
	if *sd == "" {
		return "", "", "", usageErrorf("--state-dir of a running member is required: it spreads the %s", what)
	}
	return *d, *sd, fs.Arg(0), nil
}

// handOver gives a signed document to the member running with stateDir.
// The owner state already keeps it, so the error says to run again.
func handOver(ctx context.Context, stateDir, ownerDir string, doc []byte, what string, version uint64) (overlay.DocumentResult, error) {
	ctx, cancel := context.WithTimeout(ctx, revokeTimeout)
	defer cancel()
	res, err := overlay.PushDocument(ctx, stateDir, doc)
	if err != nil {
		return res, fmt.Errorf("%s version %d is signed and kept in %s, but the member did not take it: %w (run the same command again when it runs)", what, version, ownerDir, err)
	}
	return res, nil
}

func runRevoke(ctx context.Context, args []string, stdout io.Writer) error {
	dir, stateDir, who, err := documentFlags("revoke", "revocation", args, "one member to revoke: its name or its node key")
	if err != nil {
		return err
	}
	k, st, err := loadOwner(dir)
	if err != nil {
		return err
	}
	added := 0
	if key, err := nodekey.ParsePublic(who); err == nil {
		if !slices.Contains(st.Revocations.Keys, key.String()) {
			st.Revocations.Keys = append(st.Revocations.Keys, key.String())
			added++
		}
	} else {
		found := false
		for _, is := range st.Grants {
			if is.Name != who {
				continue
			}
			found = true
			if !st.revokedGrant(is.ID) {
				st.Revocations.Grants = append(st.Revocations.Grants, is.ID)
				added++
			}
		}
		if !found {
			return usageErrorf("%q is neither a node key nor the name of a member this owner invited", who)
		}
	}
	if added > 0 || st.Revocations.Version == 0 {
		st.Revocations.Version++
	}
	doc, err := st.revocationDocument(k)
	if err != nil {
		return err
	}
	// Kept before it is handed over, so that a version is never signed
	// twice with different lists; re-running hands the same one over.
	if err := saveOwnerState(dir, st); err != nil {
		return err
	}
	res, err := handOver(ctx, stateDir, dir, doc, "revocation list", st.Revocations.Version)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "plurenet: revoked %s: revocation list version %d handed to the member (it holds version %d) and spread to the mesh\n", who, st.Revocations.Version, res.Held)
	return nil
}

// revocationDocument signs the state's list at its version.
func (st *ownerState) revocationDocument(k owner.Key) ([]byte, error) {
	var r owner.Revocations
	for _, h := range st.Revocations.Grants {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != owner.GrantIDSize {
			return nil, fmt.Errorf("%s: revoked grant %q is not %d hex bytes", ownerStateFile, h, owner.GrantIDSize)
		}
		r.Grants = append(r.Grants, owner.GrantID(b))
	}
	for _, s := range st.Revocations.Keys {
		key, err := nodekey.ParsePublic(s)
		if err != nil {
			return nil, fmt.Errorf("%s: revoked key %q: %w", ownerStateFile, s, err)
		}
		r.Keys = append(r.Keys, key)
	}
	body, err := r.Marshal()
	if err != nil {
		return nil, err
	}
	d, err := k.SignDocument(owner.KindRevocations, mesh.TopicID(st.Topic), st.Revocations.Version, body)
	if err != nil {
		return nil, err
	}
	return d.Append(nil), nil
}

// maxPolicyFile bounds the policy file read: a policy that signs must fit
// a document body, and a comment-free JSON of 64 rules is far below this.
const maxPolicyFile = 64 << 10

func runPolicy(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "set" {
		return usageErrorf("want \"policy set --owner-dir DIR --state-dir STATE_OF_A_RUNNING_MEMBER policy.json\"")
	}
	dir, stateDir, path, err := documentFlags("policy set", "policy", args[1:], `one policy file, e.g. {"allow":[{"from":"tag:dev","to":"tag:server","ports":["tcp/22"]}]}`)
	if err != nil {
		return err
	}
	k, st, err := loadOwner(dir)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("policy file: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxPolicyFile+1))
	f.Close()
	if err != nil {
		return fmt.Errorf("policy file %s: %w", path, err)
	}
	if len(raw) > maxPolicyFile {
		return usageErrorf("policy file %s: over %d bytes", path, maxPolicyFile)
	}
	pol, err := owner.ParsePolicy(raw)
	if err != nil {
		return usageErrorf("%s: %v", path, err)
	}
	body, err := pol.Marshal()
	if err != nil {
		return usageErrorf("%s: %v", path, err)
	}
	// The same rules keep their version, so re-running hands the same
	// document over; new rules get the next one. Kept before it is
	// handed over, so that a version is never signed twice with
	// different rules.
	// owner.json is indented, rules and all: compare them compacted.
	var kept bytes.Buffer
	if len(st.Policy.Rules) > 0 {
		if err := json.Compact(&kept, st.Policy.Rules); err != nil {
			return fmt.Errorf("%s: policy rules: %w", ownerStateFile, err)
		}
	}
	if st.Policy.Version == 0 || !bytes.Equal(kept.Bytes(), body) {
		st.Policy.Version++
		st.Policy.Rules = body
	}
	d, err := k.SignDocument(owner.KindPolicy, mesh.TopicID(st.Topic), st.Policy.Version, body)
	if err != nil {
		return err
	}
	if err := saveOwnerState(dir, st); err != nil {
		return err
	}
	res, err := handOver(ctx, stateDir, dir, d.Append(nil), "policy", st.Policy.Version)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "plurenet: policy version %d (%d rules) handed to the member (it holds version %d) and spread to the mesh\n", st.Policy.Version, len(pol.Allow), res.Held)
	return nil
}
