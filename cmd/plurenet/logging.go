package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// newLogger returns a text logger at the named level ("" means info).
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	switch strings.ToLower(level) {
	case "", "info":
		l = slog.LevelInfo
	case "debug":
		l = slog.LevelDebug
	case "warn", "warning":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		return nil, usageErrorf("log level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// stateDirFlag is shared by the commands that talk to a running node.
func stateDirUsage() string {
	return fmt.Sprintf("state dir of the node (default %s; env PLURENET_STATE_DIR)", defaultStateDir(getenv))
}

// stateDirOf is the state dir a command that talks to a running node
// uses: its --state-dir flag, else PLURENET_STATE_DIR, else the default.
func stateDirOf(flagValue string) string {
	return pick(flagValue, getenv("PLURENET_STATE_DIR"), defaultStateDir(getenv))
}
