package proxy_test

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse-dev/gatehouse/proxy"
)

// validProxyConfig is the smallest configuration Validate accepts. Validate
// reads no file, so the secret files need not exist.
func validProxyConfig() proxy.Config {
	c := proxy.DefaultConfig()
	c.Upstream = "http://127.0.0.1:8080"
	c.IssuerURL = "https://login.example.com"
	c.ClientID = "app"
	c.ClientSecretFile = "/secrets/client-secret"
	c.RedirectURLs = []string{"https://app.example.com/_gatehouse/callback"}
	c.CookieSecretFile = "/secrets/cookie-secret"
	return c
}

// problemFlags splits a Validate error into its problems and returns the
// flag each one names, in order. It fails the test if a problem does not
// start with "--flag: ".
func problemFlags(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var flags []string
	for line := range strings.SplitSeq(err.Error(), "\n") {
		name, _, ok := strings.Cut(line, ": ")
		if !ok || !strings.HasPrefix(name, "--") || strings.ContainsAny(name, " \"") {
			t.Errorf("problem %q does not start with the flag it is about (--name: ...)", line)
			continue
		}
		flags = append(flags, strings.TrimPrefix(name, "--"))
	}
	return flags
}

func TestValidateDefaultsNeedOnlyTheRequiredFlags(t *testing.T) {
	t.Parallel()
	err := proxy.DefaultConfig().Validate()
	want := []string{"upstream", "issuer-url", "client-id", "client-secret-file", "redirect-url", "cookie-secret-file"}
	if diff := cmp.Diff(want, problemFlags(t, err)); diff != "" {
		t.Errorf("DefaultConfig().Validate() should report exactly the required flags, in one error (-want +got):\n%s\nerror:\n%v", diff, err)
	}
	if err := validProxyConfig().Validate(); err != nil {
		t.Errorf("Validate() of the defaults plus the required flags = %v, want nil", err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(c *proxy.Config)
		// flags are the flags the problems name, in Validate's order;
		// nil means the configuration is valid.
		flags []string
		// contains is a phrase the error must hold, to tell the rule apart.
		contains string
	}{
		// Addresses.
		{name: "listen address without port", change: func(c *proxy.Config) { c.ListenAddress = "4180" }, flags: []string{"listen-address"}, contains: "host:port"},
		{name: "metrics address without port", change: func(c *proxy.Config) { c.MetricsAddress = "localhost" }, flags: []string{"metrics-address"}, contains: "host:port"},
		{name: "metrics on the listen address", change: func(c *proxy.Config) { c.MetricsAddress = ":4180" }, flags: []string{"metrics-address"}, contains: "--listen-address"},
		{name: "metrics on the listen port of one interface", change: func(c *proxy.Config) { c.MetricsAddress = "127.0.0.1:4180" }, flags: []string{"metrics-address"}},
		{name: "metrics and listen on port 0", change: func(c *proxy.Config) { c.ListenAddress, c.MetricsAddress = "127.0.0.1:0", "127.0.0.1:0" }},
		{name: "metrics on another interface and port", change: func(c *proxy.Config) { c.ListenAddress, c.MetricsAddress = "10.0.0.1:4180", "127.0.0.1:9090" }},

		// --upstream.
		{name: "upstream missing", change: func(c *proxy.Config) { c.Upstream = "" }, flags: []string{"upstream"}, contains: "required"},
		{name: "upstream not http", change: func(c *proxy.Config) { c.Upstream = "unix:///run/app.sock" }, flags: []string{"upstream"}, contains: "http"},
		{name: "upstream without scheme", change: func(c *proxy.Config) { c.Upstream = "127.0.0.1:8080" }, flags: []string{"upstream"}},
		{name: "upstream with a path", change: func(c *proxy.Config) { c.Upstream = "http://127.0.0.1:8080/app" }, flags: []string{"upstream"}, contains: "without a path"},
		{name: "upstream with a query", change: func(c *proxy.Config) { c.Upstream = "http://127.0.0.1:8080?a=b" }, flags: []string{"upstream"}, contains: "query"},
		{name: "upstream with credentials", change: func(c *proxy.Config) { c.Upstream = "http://u:p@127.0.0.1:8080" }, flags: []string{"upstream"}, contains: "credentials"},
		{name: "upstream with trailing slash", change: func(c *proxy.Config) { c.Upstream = "http://127.0.0.1:8080/" }},

		// --issuer-url: https, or http on loopback only.
		{name: "issuer missing", change: func(c *proxy.Config) { c.IssuerURL = "" }, flags: []string{"issuer-url"}, contains: "required"},
		{name: "issuer over http", change: func(c *proxy.Config) { c.IssuerURL = "http://login.example.com" }, flags: []string{"issuer-url"}, contains: "https"},
		{name: "issuer over http on a private address", change: func(c *proxy.Config) { c.IssuerURL = "http://10.0.0.5:5556" }, flags: []string{"issuer-url"}, contains: "https"},
		{name: "issuer over http on a name ending in localhost", change: func(c *proxy.Config) { c.IssuerURL = "http://localhost.example.com" }, flags: []string{"issuer-url"}, contains: "https"},
		{name: "issuer over http on 127.0.0.1", change: func(c *proxy.Config) { c.IssuerURL = "http://127.0.0.1:5556/dex" }},
		{name: "issuer over http on 127.0.0.2", change: func(c *proxy.Config) { c.IssuerURL = "http://127.0.0.2:5556" }},
		{name: "issuer over http on localhost", change: func(c *proxy.Config) { c.IssuerURL = "http://localhost:5556" }},
		{name: "issuer over http on LOCALHOST", change: func(c *proxy.Config) { c.IssuerURL = "http://LOCALHOST:5556" }},
		{name: "issuer over http on ::1", change: func(c *proxy.Config) { c.IssuerURL = "http://[::1]:5556" }},
		{name: "issuer with a realm path", change: func(c *proxy.Config) { c.IssuerURL = "https://sso.example.com/realms/main" }},
		{name: "issuer without scheme", change: func(c *proxy.Config) { c.IssuerURL = "login.example.com" }, flags: []string{"issuer-url"}},

		// Client.
		{name: "client id missing", change: func(c *proxy.Config) { c.ClientID = "" }, flags: []string{"client-id"}, contains: "required"},
		{name: "client secret missing", change: func(c *proxy.Config) { c.ClientSecretFile = "" }, flags: []string{"client-secret-file"}, contains: "none"},
		{name: "client secret from the environment", change: func(c *proxy.Config) { c.ClientSecretFile, c.ClientSecret = "", proxy.Secret("s3cret") }},
		{name: "public client", change: func(c *proxy.Config) { c.ClientSecretFile = proxy.PublicClient }},

		// Token broker: the broker holds the client secret, so the
		// sidecar must hold none.
		{name: "broker", change: func(c *proxy.Config) {
			c.ClientSecretFile = ""
			c.BrokerURL = "https://gatehouse-broker.gatehouse.svc/v1/providers/default"
			c.BrokerCAFile = "/secrets/broker-ca.crt"
		}},
		{name: "broker with a trailing slash and its own token file", change: func(c *proxy.Config) {
			c.ClientSecretFile = ""
			c.BrokerURL = "https://gatehouse-broker.gatehouse.svc/v1/providers/default/"
			c.BrokerTokenFile = "/run/broker-token"
		}},
		{name: "broker over http on loopback", change: func(c *proxy.Config) {
			c.ClientSecretFile = ""
			c.BrokerURL = "http://127.0.0.1:8443/v1/providers/default"
		}},
		{name: "broker over http", change: func(c *proxy.Config) {
			c.ClientSecretFile = ""
			c.BrokerURL = "http://gatehouse-broker.gatehouse.svc/v1/providers/default"
		}, flags: []string{"broker-url"}, contains: "https"},
		{name: "broker over http on a name ending in localhost", change: func(c *proxy.Config) {
			c.ClientSecretFile = ""
			c.BrokerURL = "http://localhost.example.com/v1/providers/default"
		}, flags: []string{"broker-url"}, contains: "https"},
		{name: "broker not a URL", change: func(c *proxy.Config) {
			c.ClientSecretFile = ""
			c.BrokerURL = "gatehouse-broker.gatehouse.svc"
		}, flags: []string{"broker-url"}, contains: "absolute"},
		{name: "broker with a query", change: func(c *proxy.Config) {
			c.ClientSecretFile = ""
			c.BrokerURL = "https://gatehouse-broker.gatehouse.svc/v1/providers/default?x=1"
		}, flags: []string{"broker-url"}, contains: "query"},
		{name: "broker with credentials", change: func(c *proxy.Config) {
			c.ClientSecretFile = ""
			c.BrokerURL = "https://u:p@gatehouse-broker.gatehouse.svc/v1/providers/default"
		}, flags: []string{"broker-url"}, contains: "credentials"},
		{name: "broker and a client secret file", change: func(c *proxy.Config) {
			c.BrokerURL = "https://gatehouse-broker.gatehouse.svc/v1/providers/default"
		}, flags: []string{"client-secret-file"}, contains: "the broker holds the client secret"},
		{name: "broker and a public client", change: func(c *proxy.Config) {
			c.ClientSecretFile = proxy.PublicClient
			c.BrokerURL = "https://gatehouse-broker.gatehouse.svc/v1/providers/default"
		}, flags: []string{"client-secret-file"}, contains: "the broker holds the client secret"},
		{name: "broker and GATEHOUSE_CLIENT_SECRET", change: func(c *proxy.Config) {
			c.ClientSecretFile, c.ClientSecret = "", proxy.Secret("s3cret")
			c.BrokerURL = "https://gatehouse-broker.gatehouse.svc/v1/providers/default"
		}, flags: []string{"client-secret-file"}, contains: "GATEHOUSE_CLIENT_SECRET must be unset"},
		{name: "broker without a token file", change: func(c *proxy.Config) {
			c.ClientSecretFile = ""
			c.BrokerURL = "https://gatehouse-broker.gatehouse.svc/v1/providers/default"
			c.BrokerTokenFile = ""
		}, flags: []string{"broker-token-file"}, contains: "required"},
		{name: "broker token file without a broker", change: func(c *proxy.Config) { c.BrokerTokenFile = "/run/broker-token" }, flags: []string{"broker-token-file"}, contains: "without --broker-url"},
		{name: "broker CA file without a broker", change: func(c *proxy.Config) { c.BrokerCAFile = "/secrets/broker-ca.crt" }, flags: []string{"broker-ca-file"}, contains: "without --broker-url"},
		{name: "every broker problem at once", change: func(c *proxy.Config) {
			c.ClientSecret = proxy.Secret("s3cret")
			c.BrokerURL = "http://gatehouse-broker.gatehouse.svc"
			c.BrokerTokenFile = " "
		}, flags: []string{"broker-url", "client-secret-file", "client-secret-file", "broker-token-file"}},

		// --path-prefix.
		{name: "prefix without leading slash", change: func(c *proxy.Config) { c.PathPrefix = "_gatehouse" }, flags: []string{"path-prefix"}, contains: "start with /"},
		{name: "prefix empty", change: func(c *proxy.Config) { c.PathPrefix = "" }, flags: []string{"path-prefix"}, contains: "start with /"},
		{name: "prefix is the root", change: func(c *proxy.Config) { c.PathPrefix = "/" }, flags: []string{"path-prefix"}, contains: "must not be /"},
		{name: "prefix with trailing slash", change: func(c *proxy.Config) { c.PathPrefix = "/_gatehouse/" }, flags: []string{"path-prefix"}, contains: "end with /"},
		{name: "prefix with dot segment", change: func(c *proxy.Config) { c.PathPrefix = "/a/../_gatehouse" }, flags: []string{"path-prefix"}, contains: "plain path"},
		{name: "prefix with double slash", change: func(c *proxy.Config) { c.PathPrefix = "/a//b" }, flags: []string{"path-prefix"}, contains: "plain path"},
		{name: "prefix with percent", change: func(c *proxy.Config) { c.PathPrefix = "/a%2Fb" }, flags: []string{"path-prefix"}, contains: "plain path"},
		{name: "prefix with query", change: func(c *proxy.Config) { c.PathPrefix = "/auth?x" }, flags: []string{"path-prefix"}, contains: "plain path"},
		{name: "custom prefix and matching redirect", change: func(c *proxy.Config) {
			c.PathPrefix = "/auth"
			c.RedirectURLs = []string{"https://app.example.com/auth/callback"}
		}},

		// --redirect-url.
		{name: "redirect missing", change: func(c *proxy.Config) { c.RedirectURLs = nil }, flags: []string{"redirect-url"}, contains: "required"},
		{name: "redirect not a URL", change: func(c *proxy.Config) { c.RedirectURLs = []string{"app.example.com/_gatehouse/callback"} }, flags: []string{"redirect-url"}},
		{name: "redirect path not the callback", change: func(c *proxy.Config) { c.RedirectURLs = []string{"https://app.example.com/callback"} }, flags: []string{"redirect-url"}, contains: "/_gatehouse/callback"},
		{name: "redirect path under the default prefix with a custom one", change: func(c *proxy.Config) { c.PathPrefix = "/auth" }, flags: []string{"redirect-url"}, contains: "/auth/callback"},
		{name: "redirect path with trailing slash", change: func(c *proxy.Config) { c.RedirectURLs = []string{"https://app.example.com/_gatehouse/callback/"} }, flags: []string{"redirect-url"}},
		{name: "redirect path with escaped slash", change: func(c *proxy.Config) { c.RedirectURLs = []string{"https://app.example.com/_gatehouse%2Fcallback"} }, flags: []string{"redirect-url"}, contains: "path"},
		{name: "redirect path with escaped letter", change: func(c *proxy.Config) { c.RedirectURLs = []string{"https://app.example.com/_gatehouse/c%61llback"} }, flags: []string{"redirect-url"}, contains: "path"},
		{name: "redirect over http while cookies are secure", change: func(c *proxy.Config) { c.RedirectURLs = []string{"http://app.example.com/_gatehouse/callback"} }, flags: []string{"redirect-url"}, contains: "--cookie-secure"},
		{name: "redirect over http without secure cookies", change: func(c *proxy.Config) {
			c.CookieSecure = false
			c.RedirectURLs = []string{"http://localhost:4180/_gatehouse/callback"}
		}},
		{name: "redirect with a query", change: func(c *proxy.Config) { c.RedirectURLs = []string{"https://app.example.com/_gatehouse/callback?x=1"} }, flags: []string{"redirect-url"}, contains: "query"},
		{name: "redirect with a fragment", change: func(c *proxy.Config) { c.RedirectURLs = []string{"https://app.example.com/_gatehouse/callback#x"} }, flags: []string{"redirect-url"}, contains: "fragment"},
		{name: "two redirects for one host", change: func(c *proxy.Config) {
			c.RedirectURLs = []string{"https://app.example.com/_gatehouse/callback", "https://APP.example.com/_gatehouse/callback"}
		}, flags: []string{"redirect-url"}, contains: "twice"},
		{name: "two redirects for two hosts", change: func(c *proxy.Config) {
			c.RedirectURLs = []string{"https://app.example.com/_gatehouse/callback", "https://app.example.org/_gatehouse/callback"}
		}},
		{name: "every bad redirect reported", change: func(c *proxy.Config) {
			c.RedirectURLs = []string{"https://a.example.com/x", "ftp://b.example.com/_gatehouse/callback"}
		}, flags: []string{"redirect-url", "redirect-url"}},

		// Cookies.
		{name: "cookie secret missing", change: func(c *proxy.Config) { c.CookieSecretFile = "" }, flags: []string{"cookie-secret-file"}, contains: "required"},
		{name: "cookie name with a space", change: func(c *proxy.Config) { c.CookieName = "my cookie" }, flags: []string{"cookie-name"}, contains: "not a valid cookie name"},
		{name: "cookie name with a semicolon", change: func(c *proxy.Config) { c.CookieName = "a;b" }, flags: []string{"cookie-name"}},
		{name: "__Host- cookie without secure", change: func(c *proxy.Config) {
			c.CookieSecure = false
			c.CookieName = "__Host-app"
			c.RedirectURLs = []string{"http://localhost:4180/_gatehouse/callback"}
		}, flags: []string{"cookie-name"}, contains: "--cookie-secure"},
		{name: "__host- cookie in lower case without secure", change: func(c *proxy.Config) {
			c.CookieSecure = false
			c.CookieName = "__host-app"
			c.RedirectURLs = []string{"http://localhost:4180/_gatehouse/callback"}
		}, flags: []string{"cookie-name"}, contains: "--cookie-secure"},
		{name: "__Secure- cookie without secure", change: func(c *proxy.Config) {
			c.CookieSecure = false
			c.CookieName = "__Secure-app"
			c.RedirectURLs = []string{"http://localhost:4180/_gatehouse/callback"}
		}, flags: []string{"cookie-name"}, contains: "--cookie-secure"},
		{name: "__Host- cookie with secure", change: func(c *proxy.Config) { c.CookieName = "__Host-app" }},
		{name: "plain cookie name", change: func(c *proxy.Config) { c.CookieName = "app_session" }},

		// Session store.
		{name: "unknown session store", change: func(c *proxy.Config) { c.SessionStore = "memcached" }, flags: []string{"session-store"}, contains: "cookie or redis"},
		{name: "redis store without URL", change: func(c *proxy.Config) { c.SessionStore = proxy.StoreRedis }, flags: []string{"redis-url"}, contains: "--session-store=redis"},
		{name: "redis store with URL", change: func(c *proxy.Config) {
			c.SessionStore = proxy.StoreRedis
			c.RedisURL = "rediss://redis.example.com:6380/0"
		}},
		{name: "redis URL not redis", change: func(c *proxy.Config) {
			c.SessionStore = proxy.StoreRedis
			c.RedisURL = "http://redis.example.com"
		}, flags: []string{"redis-url"}, contains: "redis://"},

		// --scopes.
		{name: "scopes without openid", change: func(c *proxy.Config) { c.Scopes = "email profile" }, flags: []string{"scopes"}, contains: "openid"},
		{name: "scopes with openid as part of a word", change: func(c *proxy.Config) { c.Scopes = "openidx email" }, flags: []string{"scopes"}, contains: "openid"},
		{name: "scopes empty", change: func(c *proxy.Config) { c.Scopes = "" }, flags: []string{"scopes"}},
		{name: "scopes with extra spaces", change: func(c *proxy.Config) { c.Scopes = "  email   openid " }},
		{name: "groups claim empty", change: func(c *proxy.Config) { c.GroupsClaim = " " }, flags: []string{"groups-claim"}},

		// Policy.
		{name: "email without @", change: func(c *proxy.Config) { c.AllowedEmails = []string{"alice"} }, flags: []string{"allowed-emails"}, contains: "alice"},
		{name: "email without local part", change: func(c *proxy.Config) { c.AllowedEmails = []string{"@example.com"} }, flags: []string{"allowed-emails"}},
		{name: "email without domain", change: func(c *proxy.Config) { c.AllowedEmails = []string{"alice@"} }, flags: []string{"allowed-emails"}},
		{name: "domain with @", change: func(c *proxy.Config) { c.AllowedEmailDomains = []string{"@example.com"} }, flags: []string{"allowed-email-domains"}, contains: "not a domain"},
		{name: "domain with leading dot", change: func(c *proxy.Config) { c.AllowedEmailDomains = []string{".example.com"} }, flags: []string{"allowed-email-domains"}},
		{name: "domain with trailing dot", change: func(c *proxy.Config) { c.AllowedEmailDomains = []string{"example.com."} }, flags: []string{"allowed-email-domains"}},
		{name: "each bad email reported", change: func(c *proxy.Config) { c.AllowedEmails = []string{"a", "alice@example.com", "b"} }, flags: []string{"allowed-emails", "allowed-emails"}},
		{name: "bad skip-auth regexp", change: func(c *proxy.Config) { c.SkipAuthPaths = []string{"^/healthz$", "^/static/(", "[z-a]"} }, flags: []string{"skip-auth-path", "skip-auth-path"}, contains: "^/static/("},
		{name: "good policy", change: func(c *proxy.Config) {
			c.AllowedEmails = []string{"alice@example.com"}
			c.AllowedEmailDomains = []string{"example.org"}
			c.AllowedGroups = []string{"cn=admins,ou=groups,dc=example,dc=com"}
			c.SkipAuthPaths = []string{"^/healthz$", `^/static/.+\.(css|js)$`}
		}},

		// Durations and modes.
		{name: "session lifetime below a minute", change: func(c *proxy.Config) { c.SessionLifetime = 59 * time.Second }, flags: []string{"session-lifetime"}, contains: "at least 1m"},
		{name: "session lifetime zero", change: func(c *proxy.Config) { c.SessionLifetime = 0 }, flags: []string{"session-lifetime"}},
		{name: "session lifetime one minute", change: func(c *proxy.Config) { c.SessionLifetime = time.Minute }},
		{name: "negative shutdown timeout", change: func(c *proxy.Config) { c.ShutdownTimeout = -time.Second }, flags: []string{"shutdown-timeout"}, contains: "negative"},
		{name: "zero shutdown timeout", change: func(c *proxy.Config) { c.ShutdownTimeout = 0 }},
		{name: "unknown logout redirect", change: func(c *proxy.Config) { c.LogoutRedirect = "remote" }, flags: []string{"logout-redirect"}, contains: "local or idp"},
		{name: "idp logout", change: func(c *proxy.Config) {
			c.LogoutRedirect = proxy.LogoutIdP
			c.PostLogoutRedirectURL = "https://app.example.com/"
		}},
		{name: "relative post-logout URL", change: func(c *proxy.Config) { c.PostLogoutRedirectURL = "/" }, flags: []string{"post-logout-redirect-url"}, contains: "absolute"},
		{name: "unknown log level", change: func(c *proxy.Config) { c.LogLevel = "verbose" }, flags: []string{"log-level"}, contains: "debug, info, warn or error"},
		{name: "upper-case log level", change: func(c *proxy.Config) { c.LogLevel = "DEBUG" }, flags: []string{"log-level"}},
		{name: "debug log level", change: func(c *proxy.Config) { c.LogLevel = "debug" }},

		// Several problems at once.
		{name: "several problems reported at once", change: func(c *proxy.Config) {
			c.Upstream = ""
			c.IssuerURL = "http://login.example.com"
			c.SessionStore = proxy.StoreRedis
			c.Scopes = "email"
			c.LogLevel = "loud"
		}, flags: []string{"upstream", "issuer-url", "redis-url", "scopes", "log-level"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := validProxyConfig()
			tc.change(&c)
			before := c.Args()
			err := c.Validate()
			if diff := cmp.Diff(tc.flags, problemFlags(t, err)); diff != "" {
				t.Errorf("Validate() names the wrong flags (-want +got):\n%s\nerror:\n%v", diff, err)
			}
			if err != nil && !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("Validate() = %q, want it to say %q", err, tc.contains)
			}
			if diff := cmp.Diff(before, c.Args()); diff != "" {
				t.Errorf("Validate() changed the configuration (-before +after):\n%s", diff)
			}
		})
	}
}

func TestValidateErrorsAreJoined(t *testing.T) {
	t.Parallel()
	c := validProxyConfig()
	c.Upstream = ""
	c.ClientID = ""
	err := c.Validate()
	multi, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Validate() = %v (%T), want an errors.Join of one error per problem", err, err)
	}
	if got := len(multi.Unwrap()); got != 2 {
		t.Errorf("Validate() joined %d errors, want 2 (one per problem): %v", got, err)
	}
}

func TestEffectiveCookieName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		cookie string
		secure bool
		want   string
	}{
		{"secure default", "", true, "__Host-gatehouse"},
		{"insecure default", "", false, "gatehouse"},
		{"explicit", "app", true, "app"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := proxy.DefaultConfig()
			c.CookieName, c.CookieSecure = tc.cookie, tc.secure
			if got := c.EffectiveCookieName(); got != tc.want {
				t.Errorf("EffectiveCookieName() with --cookie-name=%q --cookie-secure=%v = %q, want %q", tc.cookie, tc.secure, got, tc.want)
			}
		})
	}
}

func TestEffectiveTokenAudience(t *testing.T) {
	t.Parallel()
	c := validProxyConfig()
	if got := c.EffectiveTokenAudience(); got != c.Upstream {
		t.Errorf("EffectiveTokenAudience() without --token-audience = %q, want the upstream %q", got, c.Upstream)
	}
	c.TokenAudience = "api://app"
	if got := c.EffectiveTokenAudience(); got != "api://app" {
		t.Errorf("EffectiveTokenAudience() = %q, want --token-audience api://app", got)
	}
}

func TestLogLevelOf(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError} {
		if got := proxy.LogLevelOf(in); got != want {
			t.Errorf("LogLevelOf(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestEnvName(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		"upstream":                 "GATEHOUSE_UPSTREAM",
		"post-logout-redirect-url": "GATEHOUSE_POST_LOGOUT_REDIRECT_URL",
		"config":                   "GATEHOUSE_CONFIG",
	} {
		if got := proxy.EnvName(name); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestPolicySpecCarriesThePolicyKeys(t *testing.T) {
	t.Parallel()
	c := validProxyConfig()
	c.AllowedEmails = []string{"alice@example.com"}
	c.AllowedEmailDomains = []string{"example.org"}
	c.AllowedGroups = []string{"admins"}
	c.SkipAuthPaths = []string{"^/healthz$"}
	s := c.PolicySpec()
	got := [][]string{s.AllowedEmails, s.AllowedEmailDomains, s.AllowedGroups, s.SkipAuthPaths}
	want := [][]string{c.AllowedEmails, c.AllowedEmailDomains, c.AllowedGroups, c.SkipAuthPaths}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("PolicySpec() lost policy settings (-want +got):\n%s", diff)
	}
}

// The command prints one line per problem and relies on each reading
// "--flag: ...": check every problem of a config with every setting wrong.
func TestValidateEveryProblemNamesAFlag(t *testing.T) {
	t.Parallel()
	c := proxy.Config{
		ListenAddress:         "x",
		MetricsAddress:        "y",
		Upstream:              "z",
		IssuerURL:             "http://idp.example.com",
		RedirectURLs:          []string{"http://a/b?c#d"},
		CookieName:            "__Host-x y",
		SessionStore:          "x",
		RedisURL:              "::",
		AllowedEmails:         []string{"x"},
		SkipAuthPaths:         []string{"("},
		PathPrefix:            "x",
		SessionLifetime:       -1,
		ShutdownTimeout:       -1,
		LogoutRedirect:        "x",
		LogLevel:              "x",
		PostLogoutRedirectURL: "x",
	}
	err := c.Validate()
	flags := problemFlags(t, err)
	if len(flags) < 15 {
		t.Errorf("Validate() of a config with every setting wrong found %d problems, want one per setting:\n%v", len(flags), err)
	}
	if slices.Contains(flags, "") {
		t.Errorf("Validate() returned a problem without a flag name: %v", err)
	}
}
