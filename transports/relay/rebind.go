package relay

// Rebind asks for the relay connection to be replaced make-before-break,
// as a relay drain does: the new connection is dialed from the host's
// network as it is now, while the old one keeps carrying frames until the
// new one is up. A node calls it when its network changed (an address or
// the default route moved, or the host woke from sleep): the old TCP
// connection is bound to an address that may be gone, and would otherwise
// be found dead only by the keepalive, up to 35 s later. It does nothing
// while no connection is up; the client is then dialing anyway.
func (c *Client) Rebind(why string) {
	if cn := c.active.Load(); cn != nil {
		cn.requestPlanned(planReason{why: why})
	}
}
