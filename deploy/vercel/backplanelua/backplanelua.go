// Package backplanelua holds the Lua scripts of the relay's Redis backplane
// (docs/operations.md, "Scaling the relay"): the only writers of presence in
// Redis. The Go relay (relayserver) embeds them from here and the Node relay
// (../src/backplane.js) reads the same files when it loads, so Go and Node
// instances sharing one Redis run the very same scripts; deploy's
// TestBackplaneScriptsShared checks that on a real Redis.
//
// The files live under deploy/vercel, not in relayserver, because the Node
// relay is deployed with deploy/vercel as its project root (only that tree
// is uploaded) and a Go package can embed only files in its own directory:
// this is the one place both can reach with no build step and no copy.
//
// A script that needs the time is prelude.lua followed by its own file; the
// Node relay composes them the same way.
package backplanelua

import _ "embed"

var (
	//go:embed prelude.lua
	prelude string
	//go:embed join.lua
	join string
	//go:embed leave.lua
	leave string
	//go:embed sync.lua
	sync string
)

// Join, Leave and Sync are the scripts exactly as sent to Redis; the
// header of join.lua, leave.lua and sync.lua says what each does and which
// KEYS and ARGV it takes. Treat them as constants.
var (
	Join  = prelude + join
	Leave = leave
	Sync  = prelude + sync
)
