package relay

import "github.com/plures/plurenet/internal/relayproto"

// SetAdmission makes the client use adm from now on, for a mesh whose
// secret was rotated: the live connection, admitted to the old
// rendezvous, is replaced make-before-break by one admitted with adm, so
// sends never stop for longer than one handshake.
func (c *Client) SetAdmission(adm relayproto.AdmissionKey) {
	c.admission.Store(&adm)
	if cn := c.active.Load(); cn != nil && cn.adm != adm {
		cn.requestPlanned(planReason{why: "new admission key (mesh secret rotated)"})
	}
}

// admissionKey is the key the next handshake presents.
func (c *Client) admissionKey() relayproto.AdmissionKey {
	if a := c.admission.Load(); a != nil {
		return *a
	}
	return c.cfg.Admission
}
