package netlab

// Move takes h off its network and attaches it to another, the way a
// laptop moves from one Wi-Fi to another: its uplink (with its address
// and default route) is deleted, and a new uplink of the same name is
// attached to to, with a new address from to's subnet and a default route
// via to's gateway. Sockets bound to every address survive; those bound to
// the old address do not. h must have been made with a network.
func (l *Lab) Move(h *Host, to Network) {
	l.t.Helper()
	if h.uplink == "" {
		l.t.Fatalf("netlab: %s has no uplink to move", h.name)
	}
	link, err := h.nl.LinkByName(h.uplink)
	if err != nil {
		l.t.Fatalf("netlab: %s in %s: %v", h.uplink, h.name, err)
	}
	// Deleting one end of a veth deletes its peer, the old bridge port.
	if err := h.nl.LinkDel(link); err != nil {
		l.t.Fatalf("netlab: deleting %s in %s: %v", h.uplink, h.name, err)
	}
	l.attach(to.segment(), h, h.uplink)
}
