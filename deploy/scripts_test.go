package deploy_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/plures/plurenet/deploy/vercel/backplanelua"
	"github.com/plures/plurenet/internal/testkit"
)

// sharedScripts are the backplane's Lua scripts as the Go relay sends them,
// by the names the Node relay exports them under.
var sharedScripts = map[string]string{
	"join":  backplanelua.Join,
	"leave": backplanelua.Leave,
	"sync":  backplanelua.Sync,
}

// TestBackplaneScriptsShared: Go and Node relay instances sharing a Redis
// must run the very same Lua scripts, or their presence entries would be
// written by different rules. Two checks: the Node relay's script texts are
// the Go relay's, and each implementation, run alone on a fresh Redis, has
// made Redis run exactly those scripts (SCRIPT EXISTS by their SHA-1).
func TestBackplaneScriptsShared(t *testing.T) {
	t.Run("node texts", func(t *testing.T) {
		needNode(t)
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		cmd := exec.CommandContext(ctx, "node", "--input-type=module", "-e",
			`import { SCRIPTS } from './src/backplane.js'; process.stdout.write(JSON.stringify(SCRIPTS));`)
		cmd.Dir = nodeDir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("node printing backplane.js's SCRIPTS: %v\n%s", err, stderr.String())
		}
		var node map[string]string
		if err := json.Unmarshal(out, &node); err != nil {
			t.Fatalf("SCRIPTS from node: %v\n%s", err, out)
		}
		if len(node) != len(sharedScripts) {
			t.Errorf("the Node relay has scripts %v, the Go relay %d", keys(node), len(sharedScripts))
		}
		for name, goText := range sharedScripts {
			if node[name] != goText {
				t.Errorf("script %q differs between the Go relay and the Node relay:\ngo:\n%s\nnode:\n%s", name, goText, node[name])
			}
		}
	})
	for _, im := range impls {
		t.Run(im.name+" runs them", func(t *testing.T) {
			redisURL := startRedis(t)
			tg := im.start(t, options{redis: redisURL})
			// A rendezvous with a member here is synced (at once, and
			// every refresh). The first member's join may come before the
			// instance reaches Redis and be left to that sync; once sync
			// has run, Redis is reachable and a second member's join and
			// leave run as such.
			rv := testkit.Admission(30)
			newClient(t, tg, testkit.Key(t), rv)
			waitScriptsRun(t, redisURL, "sync")
			c := newClient(t, tg, testkit.Key(t), rv)
			waitScriptsRun(t, redisURL, "join")
			c.Close()
			waitScriptsRun(t, redisURL, "leave")
		})
	}
}

// waitScriptsRun waits until the Redis at redisURL has run the named shared
// scripts, as identified by their SHA-1.
func waitScriptsRun(t *testing.T, redisURL string, names ...string) {
	t.Helper()
	hashes := make([]string, len(names))
	for i, n := range names {
		sum := sha1.Sum([]byte(sharedScripts[n]))
		hashes[i] = hex.EncodeToString(sum[:])
	}
	waitRedis(t, redisURL, func(ctx context.Context, rdb *redis.Client) error {
		exists, err := rdb.ScriptExists(ctx, hashes...).Result()
		if err != nil {
			return fmt.Errorf("SCRIPT EXISTS: %w", err)
		}
		var missing []string
		for i, ok := range exists {
			if !ok {
				missing = append(missing, names[i])
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("the shared scripts %v never ran on Redis: this relay runs other scripts than backplanelua's", missing)
		}
		return nil
	})
}

// waitRedis polls the Redis at redisURL until check returns nil, and fails
// the test with check's last error after patience.
func waitRedis(t *testing.T, redisURL string, check func(context.Context, *redis.Client) error) {
	t.Helper()
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	deadline := time.Now().Add(patience)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		err := check(ctx, rdb)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
