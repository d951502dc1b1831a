package ownerfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/windows"
)

// MkdirAll creates dir and its missing parents. dir itself is created with
// a protected DACL for the owners (see the package doc), inherited by the
// files later created in it, such as the key and the control socket. It is
// created that way in one call, so no other user can slip a file into it
// before the DACL is set. An existing dir is left as it is: Check says
// whether it is private.
func MkdirAll(dir string) error {
	if st, err := os.Stat(dir); err == nil {
		if !st.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", dir)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return err
	}
	sd, err := ownersOnly(true)
	if err != nil {
		return err
	}
	p, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	sa := &windows.SecurityAttributes{Length: uint32(unsafe.Sizeof(windows.SecurityAttributes{})), SecurityDescriptor: sd}
	if err := windows.CreateDirectory(p, sa); err != nil && !errors.Is(err, windows.ERROR_ALREADY_EXISTS) {
		return &os.PathError{Op: "mkdir", Path: dir, Err: err}
	}
	return nil
}

// RestrictFile replaces f's DACL by a protected one for the owners: the
// Windows counterpart of chmod 600.
func RestrictFile(f *os.File) error {
	sd, err := ownersOnly(false)
	if err != nil {
		return err
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	err = windows.SetNamedSecurityInfo(f.Name(), windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil)
	if err != nil {
		return fmt.Errorf("%s: setting its access list: %w", f.Name(), err)
	}
	return nil
}

// Check returns an error when f's DACL lets anyone but the owners in. Deny
// entries are skipped (they only take access away); an allow entry for any
// other principal, a missing or null DACL, or an entry of a type this
// function does not read is refused, with the icacls command that fixes it.
func Check(f *os.File) error {
	fix := fmt.Sprintf(`run: icacls "%s" /inheritance:r /grant:r "%%USERNAME%%:F" /grant:r SYSTEM:F /grant:r Administrators:F`, f.Name())
	sd, err := windows.GetSecurityInfo(windows.Handle(f.Fd()), windows.SE_FILE_OBJECT, windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		return fmt.Errorf("reading its access list: %w", err)
	}
	dacl, _, err := sd.DACL()
	if errors.Is(err, windows.ERROR_OBJECT_NOT_FOUND) || (err == nil && dacl == nil) {
		return fmt.Errorf("it has no access list, so everyone may use it; %s", fix)
	}
	if err != nil {
		return fmt.Errorf("reading its access list: %w", err)
	}
	owners, err := trusted()
	if err != nil {
		return err
	}
	for i := range uint32(dacl.AceCount) {
		var ace *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &ace); err != nil {
			return fmt.Errorf("reading its access list: %w", err)
		}
		switch ace.Header.AceType {
		case windows.ACCESS_DENIED_ACE_TYPE:
			continue
		case windows.ACCESS_ALLOWED_ACE_TYPE:
		default:
			return fmt.Errorf("its access list holds an entry of type %d that plurenet does not check; %s", ace.Header.AceType, fix)
		}
		sid := (*windows.SID)(unsafe.Pointer(&ace.SidStart))
		if ace.Mask == 0 || isOneOf(sid, owners) {
			continue
		}
		return fmt.Errorf("%s may use it (others may have read what it holds); %s", describe(sid), fix)
	}
	return nil
}

// ownersOnly returns a security descriptor whose protected DACL gives full
// access to the current user, SYSTEM and Administrators; inherit makes the
// entries pass on to what is created inside a directory.
func ownersOnly(inherit bool) (*windows.SECURITY_DESCRIPTOR, error) {
	user, err := currentUser()
	if err != nil {
		return nil, err
	}
	flags := ""
	if inherit {
		flags = "OICI"
	}
	sddl := fmt.Sprintf("D:P(A;%[1]s;FA;;;%[2]s)(A;%[1]s;FA;;;SY)(A;%[1]s;FA;;;BA)", flags, user)
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return nil, fmt.Errorf("building an access list for the current user: %w", err)
	}
	return sd, nil
}

// currentUser returns the SID of the user this process runs as.
func currentUser() (*windows.SID, error) {
	tu, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return nil, fmt.Errorf("reading the current user: %w", err)
	}
	return tu.User.Sid.Copy()
}

// trusted returns the principals Check lets in: the current user, SYSTEM,
// Administrators, and CREATOR OWNER, which stands for whoever creates an
// object inside a directory (an entry that only passes on).
func trusted() ([]*windows.SID, error) {
	user, err := currentUser()
	if err != nil {
		return nil, err
	}
	sids := []*windows.SID{user}
	for _, k := range []windows.WELL_KNOWN_SID_TYPE{windows.WinLocalSystemSid, windows.WinBuiltinAdministratorsSid, windows.WinCreatorOwnerSid} {
		s, err := windows.CreateWellKnownSid(k)
		if err != nil {
			return nil, fmt.Errorf("building a well-known SID: %w", err)
		}
		sids = append(sids, s)
	}
	return sids, nil
}

func isOneOf(sid *windows.SID, set []*windows.SID) bool {
	for _, s := range set {
		if sid.Equals(s) {
			return true
		}
	}
	return false
}

// describe names a principal for an error message: DOMAIN\name where the
// system knows it, the SID string otherwise.
func describe(sid *windows.SID) string {
	account, domain, _, err := sid.LookupAccount("")
	switch {
	case err != nil:
		return sid.String()
	case domain != "":
		return domain + `\` + account + " (" + sid.String() + ")"
	default:
		return account + " (" + sid.String() + ")"
	}
}
