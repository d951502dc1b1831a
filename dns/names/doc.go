// Package names gives the rules that turn a mesh's membership into DNS
// names: the suffix a mesh's names live under (DefaultSuffix, ParseSuffix),
// the label a member name answers to (Label, KeyLabel), the reverse zones of
// the overlay prefixes (ReverseZones, ParseReverse), and Table, an immutable
// snapshot of who answers to which name that the resolver and the hosts
// file both read.
//
// The rules, in one place so that the resolver, the hosts file and the docs
// cannot disagree:
//
//   - A mesh's suffix is "LABEL.plurenet", LABEL being the topic name when it
//     already is a lower-case DNS label without "--", otherwise the topic
//     name made into one followed by "--" and 8 hex digits of the topic ID.
//     Distinct topics therefore never share a suffix (see DefaultSuffix).
//   - A member answers to Label(its name) when no other member's name gives
//     the same label, and always to KeyLabel (the label, "-", 8 hex digits
//     of its key), which stays the same whatever other members call
//     themselves.
//   - A label that would name two members names neither: a member holding
//     the secret can make a name stop resolving, never redirect it.
//
// Nothing here touches the network.
package names
