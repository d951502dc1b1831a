// Package netmon tells its caller when the host's network changed under
// it: an address came or went, the default route moved (a laptop went from
// home Wi-Fi to a phone hotspot), or the host slept and woke (the wall
// clock jumped ahead of the monotonic clock, which stops during suspend).
//
// On Linux it listens to netlink address and route notifications, and
// polls slowly as a backstop; elsewhere it polls the interface list. Every
// trigger only wakes a comparison: an Event is delivered when a snapshot
// of the usable addresses and default routes differs from the last one,
// after the network has been quiet for Config.Debounce, so the burst of
// notifications one move makes (address, then route, then more) becomes
// one Event, and notifications about nothing that matters (a tunnel's own
// address, excluded by Config.Exclude) none.
package netmon
