package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse-dev/gatehouse/proxy"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// fakeEnv is an environment holding exactly vars, for run's env parameter.
func fakeEnv(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

// result is what one in-process run of the command did.
type result struct {
	err            error
	stdout, stderr string
}

// runCommand runs the command in-process with a context that is already
// cancelled: a configuration that were wrongly accepted makes Run return
// at once instead of serving.
func runCommand(t *testing.T, args []string, env map[string]string) result {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, args, fakeEnv(env), &stdout, &stderr)
	if err != nil {
		printError(&stderr, err) // as main does
	}
	return result{err: err, stdout: stdout.String(), stderr: stderr.String()}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	r := runCommand(t, []string{"proxy", "--help"}, nil)
	if r.err != nil || r.stderr != "" {
		t.Fatalf("gatehouse proxy --help: error %v, stderr %q; want neither", r.err, r.stderr)
	}
	golden := filepath.Join("testdata", "proxy-help.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(r.stdout), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (create it with: go test ./cmd/gatehouse -run TestHelp -update)", err)
	}
	if diff := cmp.Diff(string(want), r.stdout); diff != "" {
		t.Errorf("gatehouse proxy --help differs from %s (-want +got); if the change is intended, run go test ./cmd/gatehouse -run TestHelp -update:\n%s", golden, diff)
	}
}

// TestHelpListsEveryFlag checks what the golden file cannot: that the help
// keeps up with the flags.
func TestHelpListsEveryFlag(t *testing.T) {
	t.Parallel()
	r := runCommand(t, []string{"proxy", "--help"}, nil)
	c := proxy.DefaultConfig()
	proxy.NewFlagSet(&c, io.Discard).VisitAll(func(f *flag.Flag) {
		if !strings.Contains(r.stdout, "\n  --"+f.Name+" ") && !strings.Contains(r.stdout, "\n  --"+f.Name+"\n") {
			t.Errorf("gatehouse proxy --help does not list --%s", f.Name)
		}
		if !strings.Contains(r.stdout, "env "+proxy.EnvName(f.Name)) {
			t.Errorf("gatehouse proxy --help does not name %s for --%s", proxy.EnvName(f.Name), f.Name)
		}
	})
	if strings.Contains(r.stdout, "\n  -"+"upstream") {
		t.Errorf("gatehouse proxy --help shows Go's single-dash flags:\n%s", r.stdout)
	}
}

func TestTopUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		wantStdout string
		wantStderr string
		wantCode   int
	}{
		{name: "--help", args: []string{"--help"}, wantStdout: topUsage},
		{name: "-h", args: []string{"-h"}, wantStdout: topUsage},
		{name: "help", args: []string{"help"}, wantStdout: topUsage},
		{name: "no arguments", args: nil, wantStderr: topUsage + "gatehouse: no command (want proxy, controller or version)\n", wantCode: 2},
		{name: "unknown command", args: []string{"serve"}, wantStderr: topUsage + "gatehouse: unknown command \"serve\" (want proxy, controller or version)\n", wantCode: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runCommand(t, tc.args, nil)
			if diff := cmp.Diff(tc.wantStdout, r.stdout); diff != "" {
				t.Errorf("gatehouse %q stdout (-want +got):\n%s", tc.args, diff)
			}
			if diff := cmp.Diff(tc.wantStderr, r.stderr); diff != "" {
				t.Errorf("gatehouse %q stderr (-want +got):\n%s", tc.args, diff)
			}
			if got := exitCode(r.err); got != tc.wantCode {
				t.Errorf("gatehouse %q exits %d (error %v), want %d", tc.args, got, r.err, tc.wantCode)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	r := runCommand(t, []string{"version"}, nil)
	if r.err != nil || !strings.HasPrefix(r.stdout, "gatehouse "+version+" (") {
		t.Errorf("gatehouse version = %q, error %v; want \"gatehouse %s (go...)\"", r.stdout, r.err, version)
	}
}

// writeFile puts content in a fresh directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProxyConfigErrors(t *testing.T) {
	t.Parallel()
	required := func(t *testing.T) map[string]string {
		return map[string]string{
			"GATEHOUSE_UPSTREAM":           "http://127.0.0.1:8080",
			"GATEHOUSE_ISSUER_URL":         "https://login.example.com",
			"GATEHOUSE_CLIENT_ID":          "app",
			"GATEHOUSE_CLIENT_SECRET":      "s3cret",
			"GATEHOUSE_REDIRECT_URL":       "https://app.example.com/_gatehouse/callback",
			"GATEHOUSE_COOKIE_SECRET_FILE": writeFile(t, "cookie-secret", strings.Repeat("k", 32)+"\n"),
			"GATEHOUSE_LISTEN_ADDRESS":     "127.0.0.1:0",
			"GATEHOUSE_METRICS_ADDRESS":    "127.0.0.1:0",
		}
	}
	tests := []struct {
		name  string
		args  []string
		env   func(t *testing.T) map[string]string
		lines []string // the exact stderr lines
	}{
		{
			name: "nothing set",
			args: []string{"proxy"},
			lines: []string{
				"gatehouse: --upstream: required: the app's URL, e.g. http://127.0.0.1:8080",
				"gatehouse: --issuer-url: required: the OIDC issuer, e.g. https://login.example.com",
				"gatehouse: --client-id: required: the OAuth client id registered at the IdP",
				`gatehouse: --client-secret-file: required: a file with the client secret, GATEHOUSE_CLIENT_SECRET, or "none" for a public client`,
				"gatehouse: --redirect-url: required: the exact callback URL registered at the IdP, e.g. https://app.example.com/_gatehouse/callback",
				"gatehouse: --cookie-secret-file: required: a file with at least 32 random bytes, e.g. made with: head -c 32 /dev/urandom | base64 > cookie-secret",
			},
		},
		{
			name: "bad flag values and env values together",
			args: []string{"proxy", "--issuer-url=http://login.example.com", "--log-level=loud"},
			env: func(t *testing.T) map[string]string {
				env := required(t)
				env["GATEHOUSE_SESSION_LIFETIME"] = "forever"
				return env
			},
			lines: []string{
				`gatehouse: GATEHOUSE_SESSION_LIFETIME: invalid value "forever": want a duration such as 90s, 15m or 12h`,
				`gatehouse: --issuer-url: "http://login.example.com" must use https (http only for loopback addresses, in development)`,
				`gatehouse: --log-level: "loud" is not debug, info, warn or error`,
			},
		},
		{
			name:  "unknown flag",
			args:  []string{"proxy", "--upstream=http://127.0.0.1:8080", "--bogus"},
			lines: []string{"gatehouse: --bogus: unknown flag (gatehouse proxy --help lists them)"},
		},
		{
			name:  "stray argument",
			args:  []string{"proxy", "http://127.0.0.1:8080"},
			lines: []string{`gatehouse: unexpected argument "http://127.0.0.1:8080" (flags start with --)`},
		},
		{
			name: "missing cookie secret file",
			args: []string{"proxy", "--cookie-secret-file=/nonexistent/cookie-secret"},
			env:  required,
			lines: []string{
				"gatehouse: --cookie-secret-file: open /nonexistent/cookie-secret: no such file or directory",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var env map[string]string
			if tc.env != nil {
				env = tc.env(t)
			}
			r := runCommand(t, tc.args, env)
			if !errors.Is(r.err, proxy.ErrConfig) && !errors.Is(r.err, errUsage) {
				t.Errorf("run(%q) = %v, want a configuration error", tc.args, r.err)
			}
			if got := exitCode(r.err); got != 2 {
				t.Errorf("run(%q) exits %d, want 2 for a configuration error", tc.args, got)
			}
			got := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			if diff := cmp.Diff(tc.lines, got); diff != "" {
				t.Errorf("run(%q) stderr, one line per problem (-want +got):\n%s", tc.args, diff)
			}
			if r.stdout != "" {
				t.Errorf("run(%q) wrote %q to stdout, want nothing", tc.args, r.stdout)
			}
		})
	}
}

func TestProxyConfigFileErrors(t *testing.T) {
	t.Parallel()
	path := writeFile(t, "gatehouse.yaml", "upstream: http://127.0.0.1:8080\nupstrem: x\nconfig: other.yaml\n")
	r := runCommand(t, []string{"proxy", "--config=" + path}, nil)
	want := []string{
		"gatehouse: --config: " + path + `: line 2: unknown key "upstrem" (keys are flag names without --, e.g. allowed-groups)`,
		"gatehouse: --config: " + path + ": line 3: key config is not allowed: the file cannot name another file",
	}
	got := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stderr for a --config file with bad keys (-want +got):\n%s", diff)
	}
	if code := exitCode(r.err); code != 2 {
		t.Errorf("exit code %d for a bad --config file, want 2", code)
	}
}

func TestExitCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"no error", nil, 0},
		{"usage", fmt.Errorf("%w: unknown command %q", errUsage, "x"), 2},
		{"config", fmt.Errorf("%w: --upstream: required", proxy.ErrConfig), 2},
		{"joined config problems", fmt.Errorf("%w: %w", proxy.ErrConfig, errors.Join(errors.New("--a: x"), errors.New("--b: y"))), 2},
		{"config inside a join", errors.Join(errors.New("other"), fmt.Errorf("%w: --x", proxy.ErrConfig)), 2},
		{"listen failure", fmt.Errorf("--listen-address: %w", syscall.EADDRINUSE), 1},
		{"cancelled", context.Canceled, 1},
		{"anything else", errors.New("boom"), 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := exitCode(tc.err); got != tc.want {
				t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

func TestProblems(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want []string
	}{
		{"plain", errors.New("boom"), []string{"boom"}},
		{"sentinel dropped", fmt.Errorf("%w: --x: bad", proxy.ErrConfig), []string{"--x: bad"}},
		{"usage dropped", fmt.Errorf("%w: no command", errUsage), []string{"no command"}},
		{
			"joined after sentinel",
			fmt.Errorf("%w: %w", proxy.ErrConfig, errors.Join(errors.New("--a: x"), errors.New("--b: y"))),
			[]string{"--a: x", "--b: y"},
		},
		{
			"nested joins",
			fmt.Errorf("%w: %w", proxy.ErrConfig, errors.Join(errors.New("--a: x"), errors.Join(errors.New("--b: y"), errors.New("--c: z")))),
			[]string{"--a: x", "--b: y", "--c: z"},
		},
		{
			"context kept when not a plain join",
			fmt.Errorf("%w: --cookie-secret-file: %w", proxy.ErrConfig, errors.Join(errors.New("line 1 short"), errors.New("line 2 short"))),
			[]string{"--cookie-secret-file: line 1 short line 2 short"},
		},
		{"multi-line message folded", errors.New("--config: f: not valid YAML: yaml: errors:\n  line 1: x\n  line 2: y"), []string{"--config: f: not valid YAML: yaml: errors: line 1: x line 2: y"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tc.want, problems(tc.err)); diff != "" {
				t.Errorf("problems(%q) (-want +got):\n%s", tc.err, diff)
			}
		})
	}
}
