package names

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/plures/plurenet/internal/nodekey"
)

// Member is what a Table needs of one member of the mesh, the local node
// included.
type Member struct {
	Key    nodekey.Public
	Name   string     // as announced; Label says what DNS makes of it
	V4, V6 netip.Addr // zero when the member has none
}

// Entry is one member as the table answers for it.
type Entry struct {
	Key    nodekey.Public
	V4, V6 netip.Addr
	// Names are the member's fully qualified names, lower case, without
	// the final dot: its Label under the suffix when no other member claims
	// that label, then its KeyLabel. Names[0] is what PTR answers.
	Names []string
}

// Table is an immutable snapshot of which names a mesh's members answer
// to. Build a new one (NewTable) whenever the membership, a name or an
// address changes; readers never lock.
type Table struct {
	suffix    string
	entries   []Entry // members with at least one name, sorted by Names[0]
	byLabel   map[string]int
	byAddr    map[netip.Addr]int
	ambiguous []string
}

// NewTable builds the table of a mesh whose names live under suffix
// (canonical, as ParseSuffix or DefaultSuffix return it). A label claimed
// by two or more members, as a Label or a KeyLabel, names none of them,
// whoever came first: each keeps its KeyLabel, and a member can make a
// shared name stop resolving but never take it over. Ambiguous
// lists those labels so that the caller can warn. Members that repeat a key
// are ignored after the first; members whose name gives no label get no
// name (they stay reachable by address).
func NewTable(suffix string, members []Member) (*Table, error) {
	if s, err := ParseSuffix(suffix); err != nil {
		return nil, err
	} else if s != suffix {
		return nil, fmt.Errorf("dns suffix %q: not canonical (want %q)", suffix, s)
	}
	ms := slices.Clone(members)
	slices.SortStableFunc(ms, func(a, b Member) int { return bytes.Compare(a.Key[:], b.Key[:]) })
	ms = slices.CompactFunc(ms, func(a, b Member) bool { return a.Key == b.Key })

	// Who claims each label: a label is unique when one member claims it.
	claims := make(map[string][]int, 2*len(ms))
	labels := make([][2]string, len(ms))
	for i, m := range ms {
		if l, ok := Label(m.Name); ok {
			labels[i][0] = l
			claims[l] = append(claims[l], i)
		}
		if l, ok := KeyLabel(m.Name, m.Key); ok {
			labels[i][1] = l
			claims[l] = append(claims[l], i)
		}
	}
	t := &Table{
		suffix:  suffix,
		byLabel: make(map[string]int, len(claims)),
		byAddr:  make(map[netip.Addr]int, 2*len(ms)),
	}
	for l, who := range claims {
		if len(who) > 1 {
			t.ambiguous = append(t.ambiguous, l)
		}
	}
	slices.Sort(t.ambiguous)

	addrOwners := make(map[netip.Addr]int)
	for i, m := range ms {
		var e Entry
		for _, l := range labels[i] {
			if l != "" && len(claims[l]) == 1 {
				e.Names = append(e.Names, l+"."+suffix)
			}
		}
		if len(e.Names) == 0 {
			continue
		}
		e.Key, e.V4, e.V6 = m.Key, m.V4.Unmap(), m.V6
		for _, a := range []netip.Addr{e.V4, e.V6} {
			if a.IsValid() {
				addrOwners[a]++
			}
		}
		t.entries = append(t.entries, e)
	}
	slices.SortFunc(t.entries, func(a, b Entry) int { return cmp.Compare(a.Names[0], b.Names[0]) })
	for i, e := range t.entries {
		for _, n := range e.Names {
			t.byLabel[n[:len(n)-len(suffix)-1]] = i
		}
		// Two members never share an address when the membership is
		// sound; if they do, PTR names neither rather than guess.
		for _, a := range []netip.Addr{e.V4, e.V6} {
			if a.IsValid() && addrOwners[a] == 1 {
				t.byAddr[a] = i
			}
		}
	}
	return t, nil
}

// Suffix returns the suffix the table's names live under.
func (t *Table) Suffix() string { return t.suffix }

// Lookup returns the member that label (one lower-case label, without the
// suffix) names.
func (t *Table) Lookup(label string) (Entry, bool) {
	i, ok := t.byLabel[label]
	if !ok {
		return Entry{}, false
	}
	return t.entries[i], true
}

// Reverse returns the member an overlay address belongs to.
func (t *Table) Reverse(a netip.Addr) (Entry, bool) {
	i, ok := t.byAddr[a.Unmap()]
	if !ok {
		return Entry{}, false
	}
	return t.entries[i], true
}

// Entries returns every member that has a name, sorted by Names[0]. The
// slices are shared: callers must not modify them.
func (t *Table) Entries() []Entry { return t.entries }

// Ambiguous returns the labels that two or more members claim, sorted;
// they resolve to no one.
func (t *Table) Ambiguous() []string { return t.ambiguous }

// AnyWithin reports whether some named member has an address in p: a
// reverse name above a member's address exists (NODATA), one above none
// does not (NXDOMAIN).
func (t *Table) AnyWithin(p netip.Prefix) bool {
	for a := range t.byAddr {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
