// Package ownerfs makes and checks files and directories that only their
// owner may use: the node key and the state directory that holds it and
// the control socket.
//
// On Unix that is the permission bits: directories 0700, files 0600, and a
// file that group or others may access is refused, as ssh refuses such a
// private key.
//
// Windows has no permission bits (Go reports synthetic ones), so there the
// same promise is kept with access control lists. What this package creates
// gets a protected DACL (nothing inherited from the parent) that grants
// access to three principals only: the user running plurenet, SYSTEM and
// the Administrators group, the set OpenSSH for Windows accepts for a
// private key. Check refuses an object whose DACL lets anyone else in
// (including a null DACL, which lets everyone in, and any entry of a kind
// it cannot read), and says which principal and how to fix it.
package ownerfs
