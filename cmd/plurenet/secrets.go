package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/url"

	"github.com/plures/plurenet/internal/secretfile"
)

// Secrets on the host. The command line of every process is readable by
// every local user (ps, /proc/PID/cmdline), so a secret belongs in a file
// only its owner can read (--key-file, --socks5-auth-file,
// --backplane-file) or in the environment (/proc/PID/environ is private to
// the process's user). A secret given as a flag still works, with a
// warning.

// maxSecretFile bounds what a secret file may hold: a secret, a
// USER:PASSWORD or a Redis URL is a few hundred bytes at most.
const maxSecretFile = 4096

// secretConfigKeys are the config file keys whose value is a secret.
var secretConfigKeys = []string{"key", "syncKey"}

// checkConfigSecrets refuses a config file that holds a secret unless it is
// as private as a key file (see internal/secretfile). A config without a
// secret may be shared, linked and world-readable as before.
func checkConfigSecrets(path string, file map[string]json.RawMessage) error {
	// The relay's file may hold a backplane URL with a Redis password.
	if raw, ok := file["backplane"]; ok {
		var v string
		if json.Unmarshal(raw, &v) == nil {
			if u, err := url.Parse(v); err == nil && u.User != nil {
				if _, hasPass := u.User.Password(); hasPass {
					if err := secretfile.CheckFile(path); err != nil {
						return fmt.Errorf("config file holds the backplane password (key \"backplane\"): %w", err)
					}
				}
			}
		}
	}
	for _, k := range secretConfigKeys {
		if _, ok := file[k]; !ok {
			continue
		}
		if err := secretfile.CheckFile(path); err != nil {
			return fmt.Errorf("config file holds the mesh secret (key %q): %w", k, err)
		}
		return nil
	}
	return nil
}

// readSecretFile reads the one-line secret named by the --flagName flag.
func readSecretFile(flagName, path string) (string, error) {
	v, err := secretfile.ReadLine(path, maxSecretFile)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", flagName, err)
	}
	return v, nil
}

// flagGiven reports whether the flag name was set on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			given = true
		}
	})
	return given
}

// warnSecretOnCommandLine says that a secret was passed as a flag, and what
// to use instead.
func warnSecretOnCommandLine(log *slog.Logger, flagName, instead string) {
	log.Warn("a secret was given on the command line, where every local user can read it (ps, /proc/PID/cmdline)",
		"flag", "--"+flagName, "instead", instead)
}

// backplaneURL picks the relay's backplane URL from --backplane (flag or
// environment) and --backplane-file, which holds the URL so that its
// password stays out of the process list.
// fromFlag says the value came from the command line (where other local
// users can read it).
func backplaneURL(value, file string, fromFlag bool, log *slog.Logger) (string, error) {
	if file != "" {
		if value != "" {
			return "", usageErrorf("the backplane is given twice: --backplane-file and --backplane (or PLURENET_RELAY_BACKPLANE): give one")
		}
		return readSecretFile("backplane-file", file)
	}
	if value != "" && fromFlag {
		if u, err := url.Parse(value); err == nil && u.User != nil {
			if _, hasPass := u.User.Password(); hasPass {
				warnSecretOnCommandLine(log, "backplane", "--backplane-file FILE (chmod 600) or PLURENET_RELAY_BACKPLANE")
			}
		}
	}
	return value, nil
}
