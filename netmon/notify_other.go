//go:build !linux

package netmon

import "context"

// subscribe has no notification source here: the Monitor polls.
func subscribe(context.Context, func()) bool { return false }

// defaultRoutes is unknown here; addresses alone show a move.
func defaultRoutes() []string { return nil }
