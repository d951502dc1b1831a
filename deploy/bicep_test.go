package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// No Bicep compiler can be had from the registries this project uses, so
// these tests read azure/main.bicep as text and hold it to what the Azure
// resource reference says (API versions and properties checked by hand, see
// azure/README.md) and to the fixes that made it deployable. With a compiler
// at hand, `az bicep build --file deploy/azure/main.bicep` checks the rest.

const bicepPath = "azure/main.bicep"

func readBicep(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(bicepPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// uriComponent is ARM's uriComponent(): every byte outside RFC 3986's
// unreserved set (letters, digits, '-', '.', '_', '~') as %XX.
func uriComponent(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

var bicepResource = regexp.MustCompile(`(?m)^resource (\w+) '([^'@]+)@([^']+)'`)

// TestBicepResources: the template declares exactly these resources, at API
// versions whose properties were checked against Azure's reference: Azure
// Managed Redis (redisEnterprise) rather than the retiring Azure Cache for
// Redis, and Container Apps versions that know workload profiles.
func TestBicepResources(t *testing.T) {
	want := map[string]string{
		"logs":    "Microsoft.OperationalInsights/workspaces@2022-10-01",
		"env":     "Microsoft.App/managedEnvironments@2024-03-01",
		"redis":   "Microsoft.Cache/redisEnterprise@2025-07-01",
		"redisDb": "Microsoft.Cache/redisEnterprise/databases@2025-07-01",
		"app":     "Microsoft.App/containerApps@2024-03-01",
	}
	got := map[string]string{}
	for _, m := range bicepResource.FindAllStringSubmatch(readBicep(t), -1) {
		got[m[1]] = m[2] + "@" + m[3]
	}
	for name, typ := range want {
		if got[name] != typ {
			t.Errorf("resource %s is %q, want %q", name, got[name], typ)
		}
	}
	for name, typ := range got {
		if want[name] == "" {
			t.Errorf("resource %s (%s) is not checked by this test: check it against the Azure reference and add it", name, typ)
		}
	}
}

// block returns the first "<head> ... { ... }" in src, braces balanced.
func block(t *testing.T, src, head string) string {
	t.Helper()
	i := strings.Index(src, head)
	if i < 0 {
		t.Fatalf("%s has no %q", bicepPath, head)
	}
	j := strings.IndexByte(src[i:], '{')
	if j < 0 {
		t.Fatalf("%q opens no block", head)
	}
	depth := 0
	for k := i + j; k < len(src); k++ {
		switch src[k] {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return src[i : k+1]
			}
		}
	}
	t.Fatalf("%q block does not close", head)
	return ""
}

func mustContain(t *testing.T, what, body string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(body, p) {
			t.Errorf("%s lacks %q", what, p)
		}
	}
}

// TestBicepRedis: the database is one a non-cluster client can use, with
// access keys on (off by default in this API version) and TLS on 10000, and
// the cluster gets the publicNetworkAccess it requires on create.
func TestBicepRedis(t *testing.T) {
	src := readBicep(t)
	mustContain(t, "the Redis cluster", block(t, src, "resource redis 'Microsoft.Cache/redisEnterprise@"),
		"if (enableRedis)", "minimumTlsVersion: '1.2'", "publicNetworkAccess: 'Enabled'", "name: redisSku")
	db := block(t, src, "resource redisDb ")
	mustContain(t, "the Redis database", db,
		"if (enableRedis)", "parent: redis", "name: 'default'", "clientProtocol: 'Encrypted'",
		"port: redisPort", "clusteringPolicy: redisClusteringPolicy", "accessKeysAuthentication: 'Enabled'")
	mustContain(t, "the template", src, "var redisPort = 10000")
	policy := regexp.MustCompile(`@allowed\(\[([^\]]*)\]\)\s*param redisClusteringPolicy string = 'NoCluster'`).FindStringSubmatch(src)
	if policy == nil {
		t.Fatal("redisClusteringPolicy is not an @allowed parameter defaulting to NoCluster")
	}
	if strings.Contains(policy[1], "OSSCluster") {
		t.Error("redisClusteringPolicy allows OSSCluster, which needs a cluster client the relays do not use")
	}
}

var backplaneURL = regexp.MustCompile(`value: '(rediss://[^']*)'`)

// TestBicepBackplaneURL evaluates the template's backplane URL for an
// access key holding '/', '+' and '=' and parses it as the Go relay does:
// the password must come back whole and the address be the database's.
func TestBicepBackplaneURL(t *testing.T) {
	m := backplaneURL.FindStringSubmatch(readBicep(t))
	if m == nil {
		t.Fatal("no rediss:// URL value in the template")
	}
	const host = "plurenet-relay-redis-abc.westeurope.redis.azure.net"
	values := map[string]string{
		"redis.properties.hostName": host,
		"redisPort":                 "10000",
	}
	url := regexp.MustCompile(`\$\{([^}]*)\}`).ReplaceAllStringFunc(m[1], func(expr string) string {
		expr = expr[2 : len(expr)-1]
		if v, ok := values[expr]; ok {
			return v
		}
		if expr == "uriComponent(redisDb.listKeys().primaryKey)" {
			return uriComponent(accessKey)
		}
		t.Errorf("the URL interpolates %q, which this test cannot evaluate (the key must go through uriComponent)", expr)
		return ""
	})
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("the template's URL does not parse: %v", err)
	}
	if opts.Password != accessKey || opts.Addr != host+":10000" || opts.TLSConfig == nil || opts.DB != 0 {
		t.Errorf("parsed: password %q addr %q TLS %v db %d; want %q %q TLS db 0", opts.Password, opts.Addr, opts.TLSConfig != nil, opts.DB, accessKey, host+":10000")
	}
}

// TestBicepApp: the app runs on the workload-profiles environment's
// Consumption profile, its name is checked to be lowercase, a private
// registry gets its registries entry with the password as a secret, and no
// secret is an argument.
func TestBicepApp(t *testing.T) {
	src := readBicep(t)
	mustContain(t, "the environment", block(t, src, "resource env "),
		"workloadProfiles:", "name: 'Consumption'", "workloadProfileType: 'Consumption'")
	app := block(t, src, "resource app ")
	mustContain(t, "the app", app,
		"name: appName", "workloadProfileName: 'Consumption'", "registries: registries",
		"secrets: concat(backplaneSecret, registrySecret)", "env: backplaneEnv")
	mustContain(t, "the template", src,
		"var appName = name == toLower(name) ? name : fail(",
		"@secure()\nparam registryPassword string",
		"var registries = empty(registryServer) ? [] : [",
		"passwordSecretRef: 'registry-password'",
		"name: 'registry-password'")
	i := strings.Index(app, "args: [")
	if i < 0 {
		t.Fatal("the container has no args")
	}
	args := app[i : i+strings.IndexByte(app[i:], ']')]
	for _, secret := range []string{"listKeys", "backplane", "registryPassword"} {
		if strings.Contains(args, secret) {
			t.Errorf("the container's args hold %q: secrets go in secrets and the environment", secret)
		}
	}
	for _, name := range []string{"'${appName}-env'", "'${appName}-logs-${suffix}'", "'${appName}-redis-${suffix}'"} {
		mustContain(t, "the template", src, "name: "+name)
	}
}

var bicepParam = regexp.MustCompile(`(?m)^param (\w+) `)

// TestDeployScript runs deploy.sh against a stand-in az that records what it
// is given: the parameters it passes are ones the template declares, as
// valid JSON, the registry password never on a command line; bad settings
// stop it before az runs.
func TestDeployScript(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	declared := map[string]bool{}
	for _, m := range bicepParam.FindAllStringSubmatch(readBicep(t), -1) {
		declared[m[1]] = true
	}
	bin := t.TempDir()
	record := filepath.Join(bin, "record")
	fake := `#!/bin/sh
echo "ARGS $*" >>"` + record + `"
for a in "$@"; do case $a in @*) cat "${a#@}" >>"` + record + `.params";; esac; done
case $1 in deployment) echo wss://relay.example;; esac
`
	if err := os.WriteFile(filepath.Join(bin, "az"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	const password = `tok"en\with$odd'chars`
	run := func(env ...string) ([]byte, error) {
		cmd := exec.Command("bash", "azure/deploy.sh", "registry.example/owner/plurenet-relay:1", "rg-test")
		cmd.Env = append(os.Environ(), append([]string{"PATH=" + bin + ":" + os.Getenv("PATH")}, env...)...)
		return cmd.CombinedOutput()
	}
	out, err := run("ENABLE_REDIS=true", "MAX_REPLICAS=3", "REGISTRY_USERNAME=owner", "REGISTRY_PASSWORD="+password)
	if err != nil {
		t.Fatalf("deploy.sh: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "relay: wss://relay.example") {
		t.Errorf("deploy.sh did not print the relay URL:\n%s", out)
	}
	args, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(args), "tok") {
		t.Errorf("the registry password reached az's command line:\n%s", args)
	}
	raw, err := os.ReadFile(record + ".params")
	if err != nil {
		t.Fatalf("deploy.sh passed no parameters file: %v\n%s", err, args)
	}
	var params struct {
		Parameters map[string]struct{ Value any } `json:"parameters"`
	}
	if err := json.Unmarshal(raw, &params); err != nil {
		t.Fatalf("parameters file is not JSON: %v\n%s", err, raw)
	}
	for name := range params.Parameters {
		if !declared[name] {
			t.Errorf("deploy.sh passes %q, which main.bicep does not declare", name)
		}
	}
	for name, want := range map[string]any{
		"registryServer": "registry.example", "registryUsername": "owner", "registryPassword": password,
		"enableRedis": true, "maxReplicas": float64(3), "name": "plurenet-relay",
	} {
		if got := params.Parameters[name].Value; got != want {
			t.Errorf("parameter %s = %#v, want %#v", name, got, want)
		}
	}

	for _, bad := range [][]string{
		{"NAME=Plurenet-Relay"},
		{"NAME=relay--x"},
		{"MAX_REPLICAS=3"}, // no backplane
		{"ENABLE_REDIS=yes"},
		{"REGISTRY_USERNAME=owner"}, // no password
	} {
		os.Remove(record)
		if out, err := run(bad...); err == nil {
			t.Errorf("deploy.sh with %v succeeded; want a refusal\n%s", bad, out)
		}
		if _, err := os.Stat(record); err == nil {
			t.Errorf("deploy.sh with %v ran az before refusing", bad)
		}
	}
}
