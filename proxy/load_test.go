package proxy_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/gatehouse-dev/gatehouse/proxy"
)

// loadEnv is an environment holding exactly vars, for Load's env parameter.
func loadEnv(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

// writeConfigYAML writes a --config file in a fresh directory.
func writeConfigYAML(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gatehouse.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// requiredArgs are the flags without a default. Load reads no secret file,
// so the paths need not exist.
var requiredArgs = []string{
	"--upstream=http://127.0.0.1:8080",
	"--issuer-url=https://login.example.com",
	"--client-id=app",
	"--client-secret-file=/secrets/client-secret",
	"--redirect-url=https://app.example.com/_gatehouse/callback",
	"--cookie-secret-file=/secrets/cookie-secret",
}

// withRequired returns requiredArgs followed by args.
func withRequired(args ...string) []string {
	return append(slices.Clone(requiredArgs), args...)
}

// configCmp compares Configs by their settings; the pinned keys are
// internal, and an empty list is no list.
var configCmp = cmp.Options{cmpopts.IgnoreUnexported(proxy.Config{}), cmpopts.EquateEmpty()}

// mustLoad calls Load and fails the test on an error.
func mustLoad(t *testing.T, args []string, env map[string]string) proxy.Config {
	t.Helper()
	c, err := proxy.Load(args, loadEnv(env), io.Discard)
	if err != nil {
		t.Fatalf("Load(%q, env %v) = %v, want no error", args, env, err)
	}
	return c
}

// loadProblems calls Load, which must fail with ErrConfig, and returns its
// problems one per line.
func loadProblems(t *testing.T, args []string, env map[string]string) []string {
	t.Helper()
	_, err := proxy.Load(args, loadEnv(env), io.Discard)
	if !errors.Is(err, proxy.ErrConfig) {
		t.Fatalf("Load(%q, env %v) = %v, want an error wrapping ErrConfig", args, env, err)
	}
	msg := strings.TrimPrefix(err.Error(), proxy.ErrConfig.Error()+": ")
	return strings.Split(msg, "\n")
}

// wantProblem fails the test unless some problem starts with prefix and
// holds every one of phrases.
func wantProblem(t *testing.T, problems []string, prefix string, phrases ...string) {
	t.Helper()
	for _, p := range problems {
		if !strings.HasPrefix(p, prefix) {
			continue
		}
		missing := false
		for _, ph := range phrases {
			if !strings.Contains(p, ph) {
				missing = true
			}
		}
		if !missing {
			return
		}
	}
	t.Errorf("no problem starts with %q and says %q; problems:\n%s", prefix, phrases, strings.Join(problems, "\n"))
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	got := mustLoad(t, requiredArgs, nil)
	want := validProxyConfig()
	if diff := cmp.Diff(want, got, configCmp); diff != "" {
		t.Errorf("Load(required flags only) differs from DefaultConfig plus those flags (-want +got):\n%s", diff)
	}
}

func TestLoadPrecedence(t *testing.T) {
	t.Parallel()
	// Each source gives its own value of a string, a duration, a bool and
	// a list setting; the highest source present must win for each.
	const (
		fileYAML = "listen-address: :1001\nsession-lifetime: 1h\npass-access-token: true\nallowed-groups: [from-file]\n"
	)
	envVars := map[string]string{
		"GATEHOUSE_LISTEN_ADDRESS":    ":1002",
		"GATEHOUSE_SESSION_LIFETIME":  "2h",
		"GATEHOUSE_PASS_ACCESS_TOKEN": "false",
		"GATEHOUSE_ALLOWED_GROUPS":    "from-env",
	}
	flags := []string{"--listen-address=:1003", "--session-lifetime=3h", "--pass-access-token", "--allowed-groups=from-flag"}
	type settings struct {
		Listen   string
		Lifetime time.Duration
		Pass     bool
		Groups   []string
	}
	tests := []struct {
		name             string
		file, env, flags bool
		want             settings
	}{
		{name: "defaults", want: settings{":4180", 12 * time.Hour, false, nil}},
		{name: "file over defaults", file: true, want: settings{":1001", time.Hour, true, []string{"from-file"}}},
		{name: "env over file", file: true, env: true, want: settings{":1002", 2 * time.Hour, false, []string{"from-env"}}},
		{name: "env over defaults", env: true, want: settings{":1002", 2 * time.Hour, false, []string{"from-env"}}},
		{name: "flag over env and file", file: true, env: true, flags: true, want: settings{":1003", 3 * time.Hour, true, []string{"from-flag"}}},
		{name: "flag over file", file: true, flags: true, want: settings{":1003", 3 * time.Hour, true, []string{"from-flag"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := slices.Clone(requiredArgs)
			env := map[string]string{}
			if tc.file {
				args = append(args, "--config="+writeConfigYAML(t, fileYAML))
			}
			if tc.env {
				env = envVars
			}
			if tc.flags {
				args = append(args, flags...)
			}
			c := mustLoad(t, args, env)
			got := settings{c.ListenAddress, c.SessionLifetime, c.PassAccessToken, c.AllowedGroups}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("the wrong source won (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadEverySettingFromEachSource(t *testing.T) {
	t.Parallel()
	// The same settings, once as flags, once as GATEHOUSE_* variables and
	// once as a --config file, must give the same Config.
	want := validProxyConfig()
	want.ListenAddress = "127.0.0.1:4181"
	want.RedirectURLs = []string{"https://a.example.com/_gatehouse/callback", "https://b.example.com/_gatehouse/callback"}
	want.CookieName = "app_session"
	want.SessionStore = proxy.StoreRedis
	want.RedisURL = "redis://127.0.0.1:6379/0"
	want.Scopes = "openid email groups"
	want.AllowedEmails = []string{"alice@example.com", "bob@example.com"}
	want.AllowedEmailDomains = []string{"example.org"}
	want.AllowedGroups = []string{"admins", "ops"}
	want.GroupsClaim = "roles"
	want.SkipAuthPaths = []string{"^/healthz$", "^/static/"}
	want.PassAccessToken = true
	want.PathPrefix = "/_gatehouse"
	want.MetricsAddress = "127.0.0.1:9091"
	want.SessionLifetime = 90 * time.Minute
	want.LogoutRedirect = proxy.LogoutIdP
	want.PostLogoutRedirectURL = "https://a.example.com/bye"
	want.TokenAudience = "api://app"
	want.ShutdownTimeout = 5 * time.Second
	want.LogLevel = "debug"

	settings := [][2]string{
		{"upstream", want.Upstream},
		{"issuer-url", want.IssuerURL},
		{"client-id", want.ClientID},
		{"client-secret-file", want.ClientSecretFile},
		{"cookie-secret-file", want.CookieSecretFile},
		{"listen-address", want.ListenAddress},
		{"redirect-url", strings.Join(want.RedirectURLs, ",")},
		{"cookie-name", want.CookieName},
		{"cookie-secure", "true"},
		{"session-store", want.SessionStore},
		{"redis-url", want.RedisURL},
		{"scopes", want.Scopes},
		{"allowed-emails", "alice@example.com, bob@example.com"},
		{"allowed-email-domains", "example.org"},
		{"allowed-groups", "admins,ops"},
		{"groups-claim", want.GroupsClaim},
		{"skip-auth-path", strings.Join(want.SkipAuthPaths, ",")},
		{"pass-access-token", "true"},
		{"path-prefix", want.PathPrefix},
		{"metrics-address", want.MetricsAddress},
		{"session-lifetime", "90m"},
		{"logout-redirect", want.LogoutRedirect},
		{"post-logout-redirect-url", want.PostLogoutRedirectURL},
		{"token-audience", want.TokenAudience},
		{"shutdown-timeout", "5s"},
		{"log-level", want.LogLevel},
	}
	var args []string
	env := map[string]string{}
	var yaml strings.Builder
	for _, s := range settings {
		name, value := s[0], s[1]
		env[proxy.EnvName(name)] = value
		switch name {
		case "redirect-url", "skip-auth-path":
			for item := range strings.SplitSeq(value, ",") {
				args = append(args, "--"+name+"="+item)
			}
			fmt.Fprintf(&yaml, "%s:\n", name)
			for item := range strings.SplitSeq(value, ",") {
				fmt.Fprintf(&yaml, "  - %q\n", item)
			}
		default:
			args = append(args, "--"+name+"="+value)
			fmt.Fprintf(&yaml, "%s: %q\n", name, value)
		}
	}
	sources := map[string]proxy.Config{
		"flags": mustLoad(t, args, nil),
		"env":   mustLoad(t, nil, env),
		"file":  mustLoad(t, []string{"--config=" + writeConfigYAML(t, yaml.String())}, nil),
	}
	for name, got := range sources {
		got.ConfigFile = ""
		if diff := cmp.Diff(want, got, configCmp); diff != "" {
			t.Errorf("Load from %s gave the wrong Config (-want +got):\n%s", name, diff)
		}
	}
}

func TestLoadRepeatableFlags(t *testing.T) {
	t.Parallel()
	const a, b, c = "https://a.example.com/_gatehouse/callback", "https://b.example.com/_gatehouse/callback", "https://c.example.com/_gatehouse/callback"
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		file      string
		redirects []string
		skips     []string
	}{
		{
			name:      "flag repeated",
			args:      []string{"--redirect-url=" + a, "--redirect-url=" + b, "--skip-auth-path=^/healthz$", "--skip-auth-path=^/x{1,3}$"},
			redirects: []string{a, b},
			skips:     []string{"^/healthz$", "^/x{1,3}$"},
		},
		{
			name:      "env comma-separated list",
			env:       map[string]string{"GATEHOUSE_REDIRECT_URL": a + ", " + b + ",", "GATEHOUSE_SKIP_AUTH_PATH": "^/healthz$,^/static/"},
			redirects: []string{a, b},
			skips:     []string{"^/healthz$", "^/static/"},
		},
		{
			name:      "env single value",
			env:       map[string]string{"GATEHOUSE_REDIRECT_URL": a},
			redirects: []string{a},
		},
		{
			name:      "file list",
			file:      "redirect-url:\n  - " + a + "\n  - " + b + "\nskip-auth-path: ['^/x{1,3}$', '^/y$']\n",
			redirects: []string{a, b},
			skips:     []string{"^/x{1,3}$", "^/y$"},
		},
		{
			name:      "file scalar is one item, commas and all",
			file:      "redirect-url: " + a + "\nskip-auth-path: '^/x{1,3}$'\n",
			redirects: []string{a},
			skips:     []string{"^/x{1,3}$"},
		},
		{
			name:      "flag replaces env entirely",
			args:      []string{"--redirect-url=" + c},
			env:       map[string]string{"GATEHOUSE_REDIRECT_URL": a + "," + b},
			redirects: []string{c},
		},
		{
			name:      "env replaces file entirely",
			env:       map[string]string{"GATEHOUSE_REDIRECT_URL": c},
			file:      "redirect-url: [" + a + ", " + b + "]\n",
			redirects: []string{c},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := []string{
				"--upstream=http://127.0.0.1:8080", "--issuer-url=https://login.example.com", "--client-id=app",
				"--client-secret-file=/s/client", "--cookie-secret-file=/s/cookie",
			}
			args = append(args, tc.args...)
			if tc.file != "" {
				args = append(args, "--config="+writeConfigYAML(t, tc.file))
			}
			c := mustLoad(t, args, tc.env)
			if diff := cmp.Diff(tc.redirects, c.RedirectURLs, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("RedirectURLs (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.skips, c.SkipAuthPaths, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("SkipAuthPaths (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadAllowedGroups(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		file string
		want []string
	}{
		{name: "flag comma list", args: []string{"--allowed-groups=admins, ops,,dev "}, want: []string{"admins", "ops", "dev"}},
		{name: "flag given twice keeps the last", args: []string{"--allowed-groups=admins", "--allowed-groups=ops"}, want: []string{"ops"}},
		{name: "env comma list", env: map[string]string{"GATEHOUSE_ALLOWED_GROUPS": "admins,ops"}, want: []string{"admins", "ops"}},
		{name: "env empty means any group", env: map[string]string{"GATEHOUSE_ALLOWED_GROUPS": ""}, file: "allowed-groups: [admins]\n", want: nil},
		{name: "file list", file: "allowed-groups:\n  - admins\n  - ops\n", want: []string{"admins", "ops"}},
		{name: "file flow list", file: "allowed-groups: [admins, ' ops ', '']\n", want: []string{"admins", "ops"}},
		{name: "file comma string", file: "allowed-groups: admins,ops\n", want: []string{"admins", "ops"}},
		{
			name: "file list item with commas stays whole",
			file: "allowed-groups:\n  - cn=admins,ou=groups,dc=example,dc=com\n  - ops\n",
			want: []string{"cn=admins,ou=groups,dc=example,dc=com", "ops"},
		},
		{name: "file number stays as written", file: "allowed-groups: [0123, 1e3, 0x1F]\n", want: []string{"0123", "1e3", "0x1F"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := withRequired(tc.args...)
			if tc.file != "" {
				args = append(args, "--config="+writeConfigYAML(t, tc.file))
			}
			c := mustLoad(t, args, tc.env)
			if diff := cmp.Diff(tc.want, c.AllowedGroups, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("AllowedGroups (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadClientSecret(t *testing.T) {
	t.Parallel()
	withoutSecretFile := slices.DeleteFunc(slices.Clone(requiredArgs), func(a string) bool {
		return strings.HasPrefix(a, "--client-secret-file=")
	})

	t.Run("from GATEHOUSE_CLIENT_SECRET", func(t *testing.T) {
		t.Parallel()
		c := mustLoad(t, withoutSecretFile, map[string]string{"GATEHOUSE_CLIENT_SECRET": "s3cret"})
		if string(c.ClientSecret) != "s3cret" {
			t.Errorf("ClientSecret = %q, want the value of GATEHOUSE_CLIENT_SECRET", []byte(c.ClientSecret))
		}
		if c.ClientSecretFile != "" {
			t.Errorf("ClientSecretFile = %q, want empty when the secret comes from the environment", c.ClientSecretFile)
		}
		if s := fmt.Sprintf("%v %+v %#v", c, c, c); strings.Contains(s, "s3cret") {
			t.Errorf("formatting the Config shows the client secret: %s", s)
		}
		if slices.ContainsFunc(c.Args(), func(a string) bool { return strings.Contains(a, "s3cret") }) {
			t.Errorf("Args() = %q renders the client secret as a flag", c.Args())
		}
	})
	t.Run("empty GATEHOUSE_CLIENT_SECRET is no secret", func(t *testing.T) {
		t.Parallel()
		problems := loadProblems(t, withoutSecretFile, map[string]string{"GATEHOUSE_CLIENT_SECRET": ""})
		wantProblem(t, problems, "--client-secret-file: ", "required")
	})
	t.Run("public client by flag", func(t *testing.T) {
		t.Parallel()
		c := mustLoad(t, append(withoutSecretFile, "--client-secret-file=none"), nil)
		if c.ClientSecretFile != proxy.PublicClient || len(c.ClientSecret) != 0 {
			t.Errorf("ClientSecretFile, ClientSecret = %q, %q; want %q and no secret for a public client", c.ClientSecretFile, []byte(c.ClientSecret), proxy.PublicClient)
		}
	})
	t.Run("public client by env", func(t *testing.T) {
		t.Parallel()
		c := mustLoad(t, withoutSecretFile, map[string]string{"GATEHOUSE_CLIENT_SECRET_FILE": "none"})
		if c.ClientSecretFile != proxy.PublicClient {
			t.Errorf("ClientSecretFile = %q, want %q from GATEHOUSE_CLIENT_SECRET_FILE", c.ClientSecretFile, proxy.PublicClient)
		}
	})
}

func TestLoadBroker(t *testing.T) {
	t.Parallel()
	withoutSecretFile := slices.DeleteFunc(slices.Clone(requiredArgs), func(a string) bool {
		return strings.HasPrefix(a, "--client-secret-file=")
	})
	want := validProxyConfig()
	want.ClientSecretFile = ""
	want.BrokerURL = "https://gatehouse-broker.gatehouse.svc/v1/providers/default"
	want.BrokerTokenFile = "/run/broker/token"
	want.BrokerCAFile = "/secrets/broker-ca.crt"
	settings := map[string]string{"broker-url": want.BrokerURL, "broker-token-file": want.BrokerTokenFile, "broker-ca-file": want.BrokerCAFile}
	args := slices.Clone(withoutSecretFile)
	env := map[string]string{}
	var yaml strings.Builder
	for name, value := range settings {
		args = append(args, "--"+name+"="+value)
		env[proxy.EnvName(name)] = value
		fmt.Fprintf(&yaml, "%s: %q\n", name, value)
	}
	sources := map[string]proxy.Config{
		"flags": mustLoad(t, args, nil),
		"env":   mustLoad(t, withoutSecretFile, env),
		"file":  mustLoad(t, append(slices.Clone(withoutSecretFile), "--config="+writeConfigYAML(t, yaml.String())), nil),
	}
	for name, got := range sources {
		got.ConfigFile = ""
		if diff := cmp.Diff(want, got, configCmp); diff != "" {
			t.Errorf("Load of the broker settings from %s (-want +got):\n%s", name, diff)
		}
	}
	if got := mustLoad(t, append(slices.Clone(withoutSecretFile), "--broker-url="+want.BrokerURL), nil); got.BrokerTokenFile != proxy.DefaultBrokerTokenFile {
		t.Errorf("default --broker-token-file %q, want %q", got.BrokerTokenFile, proxy.DefaultBrokerTokenFile)
	}

	problems := loadProblems(t, withoutSecretFile, map[string]string{
		"GATEHOUSE_BROKER_URL":    want.BrokerURL,
		"GATEHOUSE_CLIENT_SECRET": "s3cret",
	})
	wantProblem(t, problems, "--client-secret-file: ", "GATEHOUSE_CLIENT_SECRET", "broker holds the client secret")
}

func TestLoadConfigFileSelection(t *testing.T) {
	t.Parallel()
	byEnv := writeConfigYAML(t, "client-id: from-env-file\n")
	byFlag := writeConfigYAML(t, "client-id: from-flag-file\n")
	args := slices.DeleteFunc(slices.Clone(requiredArgs), func(a string) bool { return strings.HasPrefix(a, "--client-id=") })

	c := mustLoad(t, args, map[string]string{"GATEHOUSE_CONFIG": byEnv})
	if c.ClientID != "from-env-file" || c.ConfigFile != byEnv {
		t.Errorf("with GATEHOUSE_CONFIG: ClientID, ConfigFile = %q, %q; want the file named by GATEHOUSE_CONFIG read", c.ClientID, c.ConfigFile)
	}
	c = mustLoad(t, append(args, "--config="+byFlag), map[string]string{"GATEHOUSE_CONFIG": byEnv})
	if c.ClientID != "from-flag-file" || c.ConfigFile != byFlag {
		t.Errorf("with --config and GATEHOUSE_CONFIG: ClientID, ConfigFile = %q, %q; want the --config file read", c.ClientID, c.ConfigFile)
	}
}

func TestLoadConfigFileValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		file  string
		check func(c proxy.Config) string
	}{
		{
			name:  "numbers keep their text",
			file:  "token-audience: 0123\n",
			check: func(c proxy.Config) string { return cmp.Diff("0123", c.TokenAudience) },
		},
		{
			name:  "large numbers keep their text",
			file:  "token-audience: 123456789012345678901234567890\n",
			check: func(c proxy.Config) string { return cmp.Diff("123456789012345678901234567890", c.TokenAudience) },
		},
		{
			name: "durations",
			file: "session-lifetime: 36h\nshutdown-timeout: 1m30s\n",
			check: func(c proxy.Config) string {
				return cmp.Diff([]time.Duration{36 * time.Hour, 90 * time.Second}, []time.Duration{c.SessionLifetime, c.ShutdownTimeout})
			},
		},
		{
			name: "booleans",
			file: "cookie-secure: false\ncookie-name: app\nredirect-url: http://localhost:4180/_gatehouse/callback\npass-access-token: TRUE\n",
			check: func(c proxy.Config) string {
				return cmp.Diff([]bool{false, true}, []bool{c.CookieSecure, c.PassAccessToken})
			},
		},
		{
			name: "key without value keeps the default",
			file: "listen-address:\nscopes: ~\n",
			check: func(c proxy.Config) string {
				return cmp.Diff([]string{":4180", "openid email profile"}, []string{c.ListenAddress, c.Scopes})
			},
		},
		{
			name: "aliases",
			file: "allowed-groups: &g [admins, ops]\nskip-auth-path: *g\n",
			check: func(c proxy.Config) string {
				return cmp.Diff([][]string{{"admins", "ops"}, {"admins", "ops"}}, [][]string{c.AllowedGroups, c.SkipAuthPaths})
			},
		},
		{
			name:  "empty file",
			file:  "# nothing yet\n",
			check: func(c proxy.Config) string { return cmp.Diff(":4180", c.ListenAddress) },
		},
		{
			name:  "empty mapping",
			file:  "{}\n",
			check: func(c proxy.Config) string { return cmp.Diff(":4180", c.ListenAddress) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := mustLoad(t, withRequired("--config="+writeConfigYAML(t, tc.file)), nil)
			if diff := tc.check(c); diff != "" {
				t.Errorf("--config file\n%s\ngave the wrong settings (-want +got):\n%s", tc.file, diff)
			}
		})
	}
}

func TestLoadConfigFileErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		file    string
		phrases [][]string // each: phrases one problem must hold
	}{
		{
			name:    "unknown keys each named",
			file:    "upstrem: http://127.0.0.1:8080\nallowed-groups: [a]\nbogus: 1\n",
			phrases: [][]string{{"line 1", `unknown key "upstrem"`}, {"line 3", `unknown key "bogus"`}},
		},
		{
			name:    "flag name with dashes",
			file:    "--upstream: http://127.0.0.1:8080\n",
			phrases: [][]string{{`unknown key "--upstream"`}},
		},
		{
			name:    "config key rejected",
			file:    "config: /etc/other.yaml\n",
			phrases: [][]string{{"line 1", "key config is not allowed"}},
		},
		{
			name:    "duplicate key",
			file:    "client-id: a\nclient-id: b\n",
			phrases: [][]string{{"line 2", "client-id", "twice"}},
		},
		{
			name:    "not YAML",
			file:    "client-id: [a\n",
			phrases: [][]string{{"not valid YAML"}},
		},
		{
			name:    "not a mapping",
			file:    "- upstream\n- issuer-url\n",
			phrases: [][]string{{"want a mapping"}},
		},
		{
			name:    "two documents",
			file:    "client-id: a\n---\nclient-id: b\n",
			phrases: [][]string{{"more than one YAML document"}},
		},
		{
			name:    "nested mapping",
			file:    "allowed-groups:\n  admins: true\n",
			phrases: [][]string{{"allowed-groups", "not a mapping"}},
		},
		{
			name:    "list item not a scalar",
			file:    "allowed-groups:\n  - [admins]\n",
			phrases: [][]string{{"allowed-groups", "plain values"}},
		},
		{
			name:    "list for a single value",
			file:    "token-audience: [a, b]\n",
			phrases: [][]string{{"line 1", "token-audience", "single value"}},
		},
		{
			name:    "bad duration names the key",
			file:    "listen-address: :4181\nsession-lifetime: forever\n",
			phrases: [][]string{{"line 2", "session-lifetime", `"forever"`, "duration"}},
		},
		{
			name:    "bad boolean names the key",
			file:    "cookie-secure: yes\n",
			phrases: [][]string{{"line 1", "cookie-secure", `"yes"`, "true or false"}},
		},
		{
			name:    "unknown anchor",
			file:    "allowed-groups: *nope\n",
			phrases: [][]string{{"not valid YAML"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeConfigYAML(t, tc.file)
			problems := loadProblems(t, withRequired("--config="+path), nil)
			for _, ph := range tc.phrases {
				wantProblem(t, problems, "--config: "+path+": ", ph...)
			}
			if len(problems) != len(tc.phrases) {
				t.Errorf("Load reported %d problems for file\n%s\nwant %d (no follow-on errors):\n%s", len(problems), tc.file, len(tc.phrases), strings.Join(problems, "\n"))
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "absent.yaml")
		problems := loadProblems(t, withRequired("--config="+path), nil)
		wantProblem(t, problems, "--config: ", "absent.yaml")
	})
}

func TestLoadEnvErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		env     map[string]string
		phrases []string
	}{
		{map[string]string{"GATEHOUSE_SESSION_LIFETIME": "forever"}, []string{"GATEHOUSE_SESSION_LIFETIME: ", `"forever"`, "duration"}},
		{map[string]string{"GATEHOUSE_SHUTDOWN_TIMEOUT": "10"}, []string{"GATEHOUSE_SHUTDOWN_TIMEOUT: ", `"10"`}},
		{map[string]string{"GATEHOUSE_COOKIE_SECURE": "maybe"}, []string{"GATEHOUSE_COOKIE_SECURE: ", `"maybe"`, "true or false"}},
		{map[string]string{"GATEHOUSE_PASS_ACCESS_TOKEN": ""}, []string{"GATEHOUSE_PASS_ACCESS_TOKEN: ", `""`}},
	}
	for _, tc := range tests {
		t.Run(tc.phrases[0], func(t *testing.T) {
			t.Parallel()
			problems := loadProblems(t, requiredArgs, tc.env)
			wantProblem(t, problems, tc.phrases[0], tc.phrases[1:]...)
		})
	}
	t.Run("with the other problems", func(t *testing.T) {
		t.Parallel()
		problems := loadProblems(t, nil, map[string]string{"GATEHOUSE_SESSION_LIFETIME": "forever", "GATEHOUSE_LOG_LEVEL": "loud"})
		wantProblem(t, problems, "GATEHOUSE_SESSION_LIFETIME: ")
		wantProblem(t, problems, "--log-level: ", "loud")
		wantProblem(t, problems, "--upstream: ", "required")
	})
}

func TestLoadCommandLineErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		args   []string
		prefix string
		phrase string
	}{
		{"unknown flag", []string{"--bogus=1"}, "--bogus: ", "unknown flag"},
		{"unknown single-dash flag", []string{"-bogus"}, "--bogus: ", "unknown flag"},
		{"missing value", []string{"--upstream"}, "--upstream: ", "needs a value"},
		{"bad duration", []string{"--session-lifetime=1 day"}, "--session-lifetime: ", `invalid value "1 day"`},
		{"bad boolean", []string{"--cookie-secure=maybe"}, "--cookie-secure: ", `invalid value "maybe"`},
		{"stray argument", []string{"--upstream=http://127.0.0.1:8080", "extra"}, "unexpected argument", `"extra"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			_, err := proxy.Load(tc.args, nil, &out)
			if !errors.Is(err, proxy.ErrConfig) {
				t.Fatalf("Load(%q) = %v, want an error wrapping ErrConfig", tc.args, err)
			}
			problems := loadProblems(t, tc.args, nil)
			wantProblem(t, problems, tc.prefix, tc.phrase)
			if out.Len() != 0 {
				t.Errorf("Load(%q) printed %q, want nothing: the caller prints the error", tc.args, out.String())
			}
		})
	}
}

func TestLoadHelp(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--help", "-h", "-help"} {
		var out bytes.Buffer
		_, err := proxy.Load([]string{arg}, nil, &out)
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("Load(%q) = %v, want flag.ErrHelp", arg, err)
		}
		for _, want := range []string{"Usage: gatehouse proxy", "  --upstream URL\n", "env GATEHOUSE_UPSTREAM\n", `(default ":4180")`} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("Load(%q) printed help without %q:\n%s", arg, want, out.String())
			}
		}
		if strings.Contains(out.String(), "\n  -upstream") {
			t.Errorf("Load(%q) printed flags with one dash:\n%s", arg, out.String())
		}
	}
}

func TestLoadPolicyFile(t *testing.T) {
	t.Parallel()
	path := writeConfigYAML(t, `allowed-emails: [alice@example.com]
allowed-groups: [admins]
allowed-email-domains: [example.com]
skip-auth-path: ['^/old$']
`)
	base := mustLoad(t, withRequired("--config="+path, "--skip-auth-path=^/pinned-by-flag$"),
		map[string]string{"GATEHOUSE_ALLOWED_EMAILS": "pinned@example.com"})
	if diff := cmp.Diff([]string{"admins"}, base.AllowedGroups); diff != "" {
		t.Fatalf("Load did not read allowed-groups from the file (-want +got):\n%s", diff)
	}
	baseArgs := base.Args()

	// The new file changes every policy key, drops allowed-email-domains
	// and changes a setting that needs a restart.
	if err := os.WriteFile(path, []byte(`allowed-emails: [bob@example.com]
allowed-groups: [ops, dev]
skip-auth-path: ['^/new$']
listen-address: :9999
`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := proxy.LoadPolicyFile(path, base)
	if err != nil {
		t.Fatalf("LoadPolicyFile() = %v, want no error", err)
	}
	want := base
	want.AllowedEmails = []string{"pinned@example.com"} // pinned by env
	want.SkipAuthPaths = []string{"^/pinned-by-flag$"}  // pinned by flag
	want.AllowedGroups = []string{"ops", "dev"}         // from the file
	want.AllowedEmailDomains = nil                      // gone from the file
	if diff := cmp.Diff(want, got, configCmp); diff != "" {
		t.Errorf("LoadPolicyFile() (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(baseArgs, base.Args()); diff != "" {
		t.Errorf("LoadPolicyFile() changed its base (-before +after):\n%s", diff)
	}

	// The reloaded config reloads again the same way: pins survive.
	if err := os.WriteFile(path, []byte("allowed-emails: [carol@example.com]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	again, err := proxy.LoadPolicyFile(path, got)
	if err != nil {
		t.Fatalf("second LoadPolicyFile() = %v, want no error", err)
	}
	if diff := cmp.Diff([][]string{{"pinned@example.com"}, nil, {"^/pinned-by-flag$"}}, [][]string{again.AllowedEmails, again.AllowedGroups, again.SkipAuthPaths}, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("second LoadPolicyFile(): emails, groups, skip paths (-want +got):\n%s", diff)
	}
}

func TestLoadPolicyFileRejects(t *testing.T) {
	t.Parallel()
	base := validProxyConfig()
	base.AllowedGroups = []string{"admins"}
	tests := []struct {
		name, file, phrase string
	}{
		{"unknown key", "allowed-group: [ops]\n", `unknown key "allowed-group"`},
		{"bad YAML", "allowed-groups: [ops\n", "not valid YAML"},
		{"config key", "config: x.yaml\n", "config"},
		{"empty file", "", "no YAML document"},
		{"only comments", "# being rewritten\n", "no YAML document"},
		{"mapping value", "allowed-groups: {ops: 1}\n", "not a mapping"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeConfigYAML(t, tc.file)
			got, err := proxy.LoadPolicyFile(path, base)
			if err == nil || !strings.Contains(err.Error(), tc.phrase) {
				t.Errorf("LoadPolicyFile(%q) = %v, want an error saying %q", tc.file, err, tc.phrase)
			}
			if diff := cmp.Diff(base, got, configCmp); diff != "" {
				t.Errorf("LoadPolicyFile() on a rejected file did not return the base config (-base +got):\n%s", diff)
			}
		})
	}
	t.Run("empty mapping clears the policy", func(t *testing.T) {
		t.Parallel()
		got, err := proxy.LoadPolicyFile(writeConfigYAML(t, "{}\n"), base)
		if err != nil || len(got.AllowedGroups) != 0 {
			t.Errorf("LoadPolicyFile({}) = groups %q, error %v; want no groups and no error", got.AllowedGroups, err)
		}
	})
}

func TestArgsRoundTrip(t *testing.T) {
	t.Parallel()
	configFile := writeConfigYAML(t, "{}\n")
	tests := []struct {
		name   string
		change func(c *proxy.Config)
	}{
		{"required only", func(*proxy.Config) {}},
		{"repeatable flags", func(c *proxy.Config) {
			c.RedirectURLs = []string{"https://a.example.com/_gatehouse/callback", "https://b.example.com/_gatehouse/callback"}
			c.SkipAuthPaths = []string{"^/healthz$", "^/x{1,3}$", "^/a=b$"}
		}},
		{"durations", func(c *proxy.Config) {
			c.SessionLifetime = 90 * time.Minute
			c.ShutdownTimeout = 1500 * time.Millisecond
		}},
		{"odd durations", func(c *proxy.Config) {
			c.SessionLifetime = 36*time.Hour + 1*time.Second
			c.ShutdownTimeout = 0
		}},
		{"booleans off and on", func(c *proxy.Config) {
			c.CookieSecure = false
			c.PassAccessToken = true
			c.RedirectURLs = []string{"http://localhost:4180/_gatehouse/callback"}
		}},
		{"comma lists", func(c *proxy.Config) {
			c.AllowedEmails = []string{"alice@example.com", "bob@example.com"}
			c.AllowedEmailDomains = []string{"example.org"}
			c.AllowedGroups = []string{"admins", "ops"}
		}},
		{"strings", func(c *proxy.Config) {
			c.ListenAddress = "127.0.0.1:4181"
			c.MetricsAddress = "127.0.0.1:9091"
			c.CookieName = "__Host-app"
			c.SessionStore = proxy.StoreRedis
			c.RedisURL = "redis://127.0.0.1:6379/0"
			c.Scopes = "openid email groups offline_access"
			c.GroupsClaim = "roles"
			c.PathPrefix = "/auth"
			c.RedirectURLs = []string{"https://app.example.com/auth/callback"}
			c.LogoutRedirect = proxy.LogoutIdP
			c.PostLogoutRedirectURL = "https://app.example.com/bye"
			c.TokenAudience = "api://app"
			c.LogLevel = "warn"
			c.ConfigFile = configFile
		}},
		{"public client", func(c *proxy.Config) { c.ClientSecretFile = proxy.PublicClient }},
		{"broker", func(c *proxy.Config) {
			c.ClientSecretFile = ""
			c.BrokerURL = "https://gatehouse-broker.gatehouse.svc/v1/providers/default"
			c.BrokerTokenFile = "/run/broker/token"
			c.BrokerCAFile = "/secrets/broker-ca.crt"
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			want := validProxyConfig()
			tc.change(&want)
			if err := want.Validate(); err != nil {
				t.Fatalf("test config is invalid: %v", err)
			}
			args := want.Args()
			for _, a := range args {
				if !strings.HasPrefix(a, "--") || !strings.Contains(a, "=") {
					t.Errorf("Args() rendered %q, want --name=value", a)
				}
			}
			got, err := proxy.Load(args, nil, io.Discard)
			if err != nil {
				t.Fatalf("Load(Args()) = %v, want no error; args: %q", err, args)
			}
			if diff := cmp.Diff(want, got, configCmp); diff != "" {
				t.Errorf("Load(Args()) differs from the Config rendered (-want +got):\n%s\nargs: %q", diff, args)
			}
			if diff := cmp.Diff(args, got.Args()); diff != "" {
				t.Errorf("Args() of the parsed Config differs (-first +second):\n%s", diff)
			}
		})
	}
}

func TestArgsOfDefaultsIsEmpty(t *testing.T) {
	t.Parallel()
	if args := proxy.DefaultConfig().Args(); len(args) != 0 {
		t.Errorf("DefaultConfig().Args() = %q, want nothing: defaults need no flags", args)
	}
	want := []string{"--session-lifetime=1h30m", "--shutdown-timeout=45s"}
	c := proxy.DefaultConfig()
	c.SessionLifetime, c.ShutdownTimeout = 90*time.Minute, 45*time.Second
	if diff := cmp.Diff(want, c.Args()); diff != "" {
		t.Errorf("Args() renders durations badly (-want +got):\n%s", diff)
	}
}

// FuzzConfigFile checks the --config parser: it never panics, and every
// key it accepts is a flag name other than config.
func FuzzConfigFile(f *testing.F) {
	for _, seed := range []string{
		"",
		"{}",
		"~",
		"---\n",
		"# only a comment\n",
		"upstream: http://127.0.0.1:8080\nissuer-url: https://login.example.com\n",
		"allowed-groups: [admins, ops]\nskip-auth-path:\n  - ^/healthz$\n  - '^/x{1,3}$'\n",
		"allowed-groups:\n  - cn=admins,ou=groups,dc=example,dc=com\n",
		"session-lifetime: 12h\ncookie-secure: false\nclient-id: 0123\n",
		"config: other.yaml\n",
		"bogus: 1\n",
		"client-id: a\nclient-id: b\n",
		"a: &x [1, 2]\nallowed-groups: *x\n",
		"base: &b {client-id: x}\n<<: *b\n",
		"? [upstream]\n: x\n",
		"? upstream\n: x\n",
		"allowed-groups: {a: 1}\n",
		"allowed-groups: [[a]]\n",
		"allowed-groups: [~]\n",
		"client-id: !!binary aGVsbG8=\n",
		"client-id: !custom x\n",
		"- upstream\n",
		"a: 1\n---\nb: 2\n",
		"upstream: [\n",
		"\"\": x\n",
		"1: x\n",
		"\xff\xfe",
		"a: &a [*a]\n",
		"x: &x [&y [*x]]\n",
		"lol: &a [a, a, a]\nlol2: &b [*a, *a, *a]\nallowed-groups: *b\n",
	} {
		f.Add([]byte(seed))
	}
	c := proxy.DefaultConfig()
	names := map[string]bool{}
	proxy.NewFlagSet(&c, io.Discard).VisitAll(func(fl *flag.Flag) { names[fl.Name] = true })
	f.Fuzz(func(t *testing.T, in []byte) {
		keys, err := proxy.ParseConfigFile(in)
		if err != nil {
			if len(keys) != 0 {
				t.Errorf("ParseConfigFile(%q) = %q with error %v, want no keys on error", in, keys, err)
			}
			return
		}
		for _, k := range keys {
			if !names[k] || k == "config" {
				t.Errorf("ParseConfigFile(%q) accepted key %q, which is not a flag name (or is config)", in, k)
			}
		}
	})
}
