package portmap

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	natpmp "github.com/jackpal/go-nat-pmp"
)

// pmpClient speaks NAT-PMP (RFC 6886) through github.com/jackpal/go-nat-pmp,
// which sends from a socket connected to the gateway's port 5351 and drops
// answers from any other address.
type pmpClient struct{ gw Gateway }

// pmp returns a library client whose retries end at ctx's deadline. The
// library takes no context, so a cancelled ctx is noticed only at that
// deadline: callers keep it short.
func (c pmpClient) pmp(ctx context.Context) *natpmp.Client {
	timeout := exchangeTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	return natpmp.NewClientWithLocalAndTimeout(c.gw.Addr.AsSlice(), c.gw.Self.AsSlice(), timeout)
}

func (c pmpClient) probe(ctx context.Context) (netip.Addr, error) {
	r, err := c.pmp(ctx).GetExternalAddress()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("NAT-PMP: %w", err)
	}
	ext := netip.AddrFrom4(r.ExternalIPAddress)
	if !usableExternal(ext) {
		return netip.Addr{}, fmt.Errorf("NAT-PMP: the gateway has no usable external address (it says %s)", ext)
	}
	return ext, nil
}

func (c pmpClient) add(ctx context.Context, port uint16, prev Mapping, lifetime time.Duration) (Mapping, error) {
	want := port
	if prev.IsValid() {
		want = prev.External.Port()
	}
	r, err := c.pmp(ctx).AddPortMapping("udp", int(port), int(want), int(seconds(lifetime)))
	if err != nil {
		return Mapping{}, fmt.Errorf("NAT-PMP: mapping UDP %d: %w", port, err)
	}
	if r.InternalPort != port || r.MappedExternalPort == 0 || r.PortMappingLifetimeInSeconds == 0 {
		return Mapping{}, fmt.Errorf("NAT-PMP: mapping UDP %d: the gateway answered internal port %d, external port %d, lifetime %d s",
			port, r.InternalPort, r.MappedExternalPort, r.PortMappingLifetimeInSeconds)
	}
	// The mapping answer carries no address: ask for it (it may also have
	// changed since a renewal before).
	ext, err := c.probe(ctx)
	if err != nil {
		return Mapping{}, err
	}
	return Mapping{
		Protocol: NATPMP,
		Internal: netip.AddrPortFrom(c.gw.Self, port),
		External: netip.AddrPortFrom(ext, r.MappedExternalPort),
		Lifetime: time.Duration(r.PortMappingLifetimeInSeconds) * time.Second,
		Obtained: time.Now(),
	}, nil
}

func (c pmpClient) remove(ctx context.Context, m Mapping) error {
	// RFC 6886 section 3.4: lifetime 0 and external port 0 delete.
	if _, err := c.pmp(ctx).AddPortMapping("udp", int(m.Internal.Port()), 0, 0); err != nil {
		return fmt.Errorf("NAT-PMP: removing %s: %w", m.External, err)
	}
	return nil
}
