package names

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/plures/plurenet/internal/nodekey"
)

const suffix = "home.plurenet"

func key(b byte) nodekey.Public { return nodekey.Public{b, b, b, b} }

func member(b byte, name string) Member {
	return Member{
		Key:  key(b),
		Name: name,
		V4:   netip.AddrFrom4([4]byte{100, 64, 0, b}),
		V6:   netip.AddrFrom16([16]byte{0xfd, 1, 2, 3, 4, 5, 15: b}),
	}
}

func TestTable(t *testing.T) {
	type want struct {
		label string
		key   byte // 0: no answer
	}
	for _, tc := range []struct {
		name      string
		members   []Member
		lookups   []want
		ambiguous []string
	}{
		{
			name:    "unique names and key labels",
			members: []Member{member(1, "laptop"), member(2, "nas")},
			lookups: []want{{"laptop", 1}, {"nas", 2}, {"laptop-01010101", 1}, {"nas-02020202", 2}, {"db", 0}, {"laptop-02020202", 0}},
		},
		{
			name:      "duplicate name resolves to neither, key labels still do",
			members:   []Member{member(1, "raspberrypi"), member(2, "raspberrypi"), member(3, "nas")},
			lookups:   []want{{"raspberrypi", 0}, {"raspberrypi-01010101", 1}, {"raspberrypi-02020202", 2}, {"nas", 3}},
			ambiguous: []string{"raspberrypi"},
		},
		{
			name:      "names equal after normalising collide",
			members:   []Member{member(1, "NAS"), member(2, "nas.lan"), member(3, "build_box"), member(4, "build-box")},
			lookups:   []want{{"nas", 0}, {"build-box", 0}, {"nas-01010101", 1}, {"nas-02020202", 2}},
			ambiguous: []string{"build-box", "nas"},
		},
		{
			name: "a name equal to another's key label makes both stop",
			// Member 2 calls itself what member 1 answers to by key.
			members:   []Member{member(1, "nas"), member(2, "nas-01010101")},
			lookups:   []want{{"nas", 1}, {"nas-01010101", 0}, {"nas-01010101-02020202", 2}},
			ambiguous: []string{"nas-01010101"},
		},
		{
			name:    "member without a usable name has none",
			members: []Member{member(1, ""), member(2, "my laptop"), member(3, "ok")},
			lookups: []want{{"ok", 3}, {"my", 0}},
		},
		{
			name:    "a repeated key counts once",
			members: []Member{member(1, "nas"), member(1, "nas")},
			lookups: []want{{"nas", 1}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := NewTable(suffix, tc.members)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.lookups {
				e, ok := tab.Lookup(w.label)
				switch {
				case w.key == 0 && ok:
					t.Errorf("Lookup(%q) = %v, want no answer", w.label, e.Names)
				case w.key != 0 && (!ok || e.Key != key(w.key)):
					t.Errorf("Lookup(%q) = %v, %v; want member %d", w.label, e.Names, ok, w.key)
				}
			}
			if got := tab.Ambiguous(); !slices.Equal(got, tc.ambiguous) {
				t.Errorf("Ambiguous() = %q, want %q", got, tc.ambiguous)
			}
			// Every name an entry lists resolves back to that entry, and
			// its addresses resolve to its first name.
			for _, e := range tab.Entries() {
				for _, n := range e.Names {
					l := n[:len(n)-len(suffix)-1]
					if got, ok := tab.Lookup(l); !ok || got.Key != e.Key {
						t.Errorf("entry %v: Lookup(%q) = %v, %v", e.Names, l, got.Names, ok)
					}
				}
				for _, a := range []netip.Addr{e.V4, e.V6} {
					if got, ok := tab.Reverse(a); !ok || got.Names[0] != e.Names[0] {
						t.Errorf("Reverse(%s) = %v, %v; want %s", a, got.Names, ok, e.Names[0])
					}
				}
			}
		})
	}
}

func TestTableReverse(t *testing.T) {
	a, b := member(1, "laptop"), member(2, "raspberrypi")
	c := member(3, "raspberrypi")
	shared := member(4, "x")
	shared.V4 = a.V4 // unsound membership: two members claim one address
	nameless := member(5, "")
	tab, err := NewTable(suffix, []Member{a, b, c, shared, nameless})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr netip.Addr
		want string
	}{
		{a.V6, "laptop.home.plurenet"},
		{a.V4, ""}, // shared: no answer rather than a guess
		{b.V4, "raspberrypi-02020202.home.plurenet"},
		{c.V6, "raspberrypi-03030303.home.plurenet"},
		{shared.V6, "x.home.plurenet"},
		{nameless.V4, ""},
		{netip.AddrFrom16(b.V4.As16()), "raspberrypi-02020202.home.plurenet"}, // v4-mapped form
		{netip.MustParseAddr("100.64.9.9"), ""},
	} {
		e, ok := tab.Reverse(tc.addr)
		got := ""
		if ok {
			got = e.Names[0]
		}
		if got != tc.want {
			t.Errorf("Reverse(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
	if !tab.AnyWithin(netip.MustParsePrefix("100.64.0.0/24")) || tab.AnyWithin(netip.MustParsePrefix("100.65.0.0/16")) {
		t.Errorf("AnyWithin: want members in 100.64.0.0/24 and none in 100.65.0.0/16")
	}
}

func TestNewTableSuffix(t *testing.T) {
	for _, s := range []string{"", "Home.plurenet", "home.plurenet.", "x.local"} {
		if _, err := NewTable(s, nil); err == nil {
			t.Errorf("NewTable(%q) accepted a suffix that is not canonical or not valid", s)
		}
	}
}
