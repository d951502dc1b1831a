package portfwd

import (
	"strings"
	"testing"
)

func TestParseForward(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		want    ForwardSpec
		wantErr string // substring of the error; "" means success
	}{
		{"port only", "8080=laptop:80", ForwardSpec{"127.0.0.1:8080", "laptop", 80}, ""},
		{"host and port", "127.0.0.2:8080=100.64.1.2:80", ForwardSpec{"127.0.0.2:8080", "100.64.1.2", 80}, ""},
		{"all interfaces", ":8080=db:5432", ForwardSpec{":8080", "db", 5432}, ""},
		{"ipv6 local", "[::1]:8080=laptop:80", ForwardSpec{"[::1]:8080", "laptop", 80}, ""},
		{"ipv6 target", "8080=[fd5e::1]:80", ForwardSpec{"127.0.0.1:8080", "fd5e::1", 80}, ""},
		{"ipv6 both", "[::1]:80=[fd00::2]:443", ForwardSpec{"[::1]:80", "fd00::2", 443}, ""},
		{"mapped v4 target", "80=[::ffff:100.64.0.1]:80", ForwardSpec{"127.0.0.1:80", "100.64.0.1", 80}, ""},
		{"dotted member name", "80=home.server_1:22", ForwardSpec{"127.0.0.1:80", "home.server_1", 22}, ""},

		{"missing equals", "8080", ForwardSpec{}, `missing "="`},
		{"missing equals with target", "8080:laptop:80", ForwardSpec{}, `missing "="`},
		{"empty", "", ForwardSpec{}, `missing "="`},
		{"empty target", "8080=", ForwardSpec{}, "empty target"},
		{"empty local", "=laptop:80", ForwardSpec{}, "local side: empty address"},
		{"target without port", "8080=laptop", ForwardSpec{}, "not HOST:PORT"},
		{"target empty host", "8080=:80", ForwardSpec{}, "empty target host"},
		{"local port zero", "0=laptop:80", ForwardSpec{}, "out of range"},
		{"local port too big", "70000=laptop:80", ForwardSpec{}, "out of range"},
		{"target port zero", "8080=laptop:0", ForwardSpec{}, "out of range"},
		{"target port too big", "8080=laptop:70000", ForwardSpec{}, "out of range"},
		{"target port name", "8080=laptop:http", ForwardSpec{}, "not a number"},
		{"local port name", "http=laptop:80", ForwardSpec{}, "not a number"},
		{"unbracketed ipv6 target", "8080=fd00::2:80", ForwardSpec{}, "not HOST:PORT"},
		{"unbracketed ipv6 local", "::1:8080=laptop:80", ForwardSpec{}, "local side"},
		{"bad target char", "8080=lap top:80", ForwardSpec{}, "invalid character"},
		{"zone", "8080=[fe80::1%eth0]:80", ForwardSpec{}, "zones"},
		{"target too long", "80=" + strings.Repeat("a", 254) + ":80", ForwardSpec{}, "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseForward(tt.spec)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseForward(%q) = %+v, want error containing %q", tt.spec, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "want LOCAL=TARGET:PORT") {
					t.Fatalf("error %q lacks %q or the expected form", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseForward(%q): %v", tt.spec, err)
			}
			if got != tt.want {
				t.Fatalf("ParseForward(%q) = %+v, want %+v", tt.spec, got, tt.want)
			}
		})
	}
}

func TestForwardSpecTargetAddr(t *testing.T) {
	for spec, want := range map[string]string{
		"80=laptop:22":     "laptop:22",
		"80=[fd00::2]:443": "[fd00::2]:443",
		"80=100.64.0.2:80": "100.64.0.2:80",
	} {
		f, err := ParseForward(spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.TargetAddr(); got != want {
			t.Errorf("%q: TargetAddr = %q, want %q", spec, got, want)
		}
	}
}

func TestParseExpose(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		want    ExposeSpec
		wantErr string
	}{
		{"port only", "8080", ExposeSpec{8080, "127.0.0.1:8080"}, ""},
		{"leading zero", "08080", ExposeSpec{8080, "127.0.0.1:8080"}, ""},
		{"local host and port", "80=127.0.0.1:3000", ExposeSpec{80, "127.0.0.1:3000"}, ""},
		{"local port only", "80=3000", ExposeSpec{80, "127.0.0.1:3000"}, ""},
		{"local name", "5432=db.local:5432", ExposeSpec{5432, "db.local:5432"}, ""},
		{"local ipv6", "80=[::1]:3000", ExposeSpec{80, "[::1]:3000"}, ""},

		{"empty", "", ExposeSpec{}, "missing port"},
		{"port zero", "0", ExposeSpec{}, "out of range"},
		{"port too big", "70000", ExposeSpec{}, "out of range"},
		{"not a number", "http", ExposeSpec{}, "not a number"},
		{"empty local", "80=", ExposeSpec{}, "empty address"},
		{"local empty host", "80=:3000", ExposeSpec{}, "empty host"},
		{"local port zero", "80=127.0.0.1:0", ExposeSpec{}, "out of range"},
		{"local port too big", "80=70000", ExposeSpec{}, "out of range"},
		{"unbracketed ipv6", "80=::1:3000", ExposeSpec{}, "bracket IPv6"},
		{"overlay host given", "127.0.0.1:80", ExposeSpec{}, "overlay port"},
		{"two equals", "80=1=2", ExposeSpec{}, "local service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseExpose(tt.spec)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseExpose(%q) = %+v, want error containing %q", tt.spec, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "want PORT or PORT=HOST:PORT") {
					t.Fatalf("error %q lacks %q or the expected form", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseExpose(%q): %v", tt.spec, err)
			}
			if got != tt.want {
				t.Fatalf("ParseExpose(%q) = %+v, want %+v", tt.spec, got, tt.want)
			}
		})
	}
}

// FuzzParseSpecs checks that no spec makes the parsers panic and that what
// they accept is self-consistent.
func FuzzParseSpecs(f *testing.F) {
	for _, s := range []string{"8080=laptop:80", "[::1]:80=[fd00::2]:443", "8080", "80=127.0.0.1:3000", "=", "[", "80=[::1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		if fw, err := ParseForward(spec); err == nil {
			if fw.Port == 0 || fw.Target == "" || fw.Listen == "" {
				t.Fatalf("ParseForward(%q) accepted incomplete %+v", spec, fw)
			}
			if again, err := ParseForward(fw.Listen + "=" + fw.TargetAddr()); err != nil || again != fw {
				t.Fatalf("ParseForward(%q) = %+v does not round-trip: %+v, %v", spec, fw, again, err)
			}
		}
		if ex, err := ParseExpose(spec); err == nil && (ex.Port == 0 || ex.Local == "") {
			t.Fatalf("ParseExpose(%q) accepted incomplete %+v", spec, ex)
		}
	})
}
