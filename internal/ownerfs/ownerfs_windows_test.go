package ownerfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/windows"
)

// setDACL gives path the DACL of an SDDL string; %[1]s in sddl stands for
// the current user's SID.
func setDACL(t *testing.T, path, sddl string) {
	t.Helper()
	user, err := currentUser()
	if err != nil {
		t.Fatal(err)
	}
	sd, err := windows.SecurityDescriptorFromString(strings.ReplaceAll(sddl, "%[1]s", user.String()))
	if err != nil {
		t.Fatal(err)
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		t.Fatal(err)
	}
	if err := windows.SetNamedSecurityInfo(path, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil); err != nil {
		t.Fatal(err)
	}
}

func TestCheckReadsTheDACL(t *testing.T) {
	tmp := t.TempDir()
	for _, c := range []struct {
		name, sddl string
		want       string // "" for accepted
	}{
		{"owners only", "D:P(A;;FA;;;%[1]s)(A;;FA;;;SY)(A;;FA;;;BA)", ""},
		{"user only", "D:P(A;;FA;;;%[1]s)", ""},
		{"everyone denied", "D:P(D;;FA;;;WD)(A;;FA;;;%[1]s)", ""},
		{"everyone may read", "D:P(A;;FA;;;%[1]s)(A;;FR;;;WD)", "S-1-1-0"},
		{"users may read", "D:P(A;;FA;;;%[1]s)(A;;FR;;;BU)", "S-1-5-32-545"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(tmp, strings.ReplaceAll(c.name, " ", "-"))
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			setDACL(t, path, c.sddl)
			wantCheck(t, path, c.want, "icacls")
		})
	}
}
