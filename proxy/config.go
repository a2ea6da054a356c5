package proxy

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/authz"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session/redisstore"
)

// Session store kinds.
const (
	StoreCookie = "cookie"
	StoreRedis  = "redis"
)

// Logout redirect modes.
const (
	LogoutLocal = "local"
	LogoutIdP   = "idp"
)

// PublicClient is the --client-secret-file value that declares a public
// client (PKCE only, no secret).
const PublicClient = "none"

// DefaultBrokerTokenFile is where the controller mounts the projected
// ServiceAccount token a sidecar shows gatehouse broker.
const DefaultBrokerTokenFile = "/var/run/secrets/gatehouse.dev/broker/token" //nolint:gosec // a path, not a credential

// Config is the validated configuration of the proxy. Start from
// DefaultConfig; Load fills it from flags, environment and file.
type Config struct {
	ListenAddress    string
	Upstream         string
	IssuerURL        string
	ClientID         string
	ClientSecretFile string
	RedirectURLs     []string
	CookieSecretFile string
	CookieName       string
	CookieSecure     bool
	SessionStore     string
	RedisURL         string
	RedisClientCache bool
	// RedisKeyPrefix starts every key the store writes; a namespace's
	// Redis user is limited to its own prefix.
	RedisKeyPrefix        string
	Scopes                string
	AllowedEmails         []string
	AllowedEmailDomains   []string
	AllowedGroups         []string
	GroupsClaim           string
	SkipAuthPaths         []string
	PassAccessToken       bool
	PathPrefix            string
	MetricsAddress        string
	SessionLifetime       time.Duration
	LogoutRedirect        string
	PostLogoutRedirectURL string
	TokenAudience         string
	ShutdownTimeout       time.Duration
	LogLevel              string
	ConfigFile            string
	// BrokerURL, when set, sends the requests that need the client secret
	// (code exchange, refresh, revocation) to gatehouse broker, which holds
	// it, instead of the IdP. The sidecar then holds no client secret.
	BrokerURL string
	// BrokerTokenFile holds the projected ServiceAccount token that
	// authenticates the sidecar to the broker; it is read for every
	// broker request, since the kubelet rotates it.
	BrokerTokenFile string
	// BrokerCAFile is a PEM bundle the broker's certificate must chain
	// to; empty means the system roots. It is reloaded when it changes.
	BrokerCAFile string

	// ClientSecret is the client secret given by GATEHOUSE_CLIENT_SECRET
	// rather than a file. It is never a flag, so it never shows in a
	// process listing.
	ClientSecret Secret
	// RedisPassword is the Redis password from GATEHOUSE_REDIS_PASSWORD;
	// it replaces any password in --redis-url.
	RedisPassword Secret

	// pinned names the policy keys set by flag or environment; a reloaded
	// --config file does not override them.
	pinned map[string]bool
}

// DefaultConfig returns the defaults of DESIGN.md "The proxy contract".
func DefaultConfig() Config {
	return Config{
		ListenAddress:    ":4180",
		CookieSecure:     true,
		SessionStore:     StoreCookie,
		RedisClientCache: true,
		RedisKeyPrefix:   "gatehouse:",
		Scopes:           "openid email profile",
		GroupsClaim:      "groups",
		PathPrefix:       "/_gatehouse",
		MetricsAddress:   ":9090",
		SessionLifetime:  12 * time.Hour,
		LogoutRedirect:   LogoutLocal,
		ShutdownTimeout:  20 * time.Second,
		LogLevel:         "info",
		BrokerTokenFile:  DefaultBrokerTokenFile,
	}
}

// RegisterFlags defines every proxy flag on fs, bound to c.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.ListenAddress, "listen-address", c.ListenAddress, "`address` where browsers' traffic arrives")
	fs.StringVar(&c.Upstream, "upstream", c.Upstream, "`URL` of the app, e.g. http://127.0.0.1:8080 (required)")
	fs.StringVar(&c.IssuerURL, "issuer-url", c.IssuerURL, "OIDC issuer `URL`; discovery at <issuer>/.well-known/openid-configuration (required)")
	fs.StringVar(&c.ClientID, "client-id", c.ClientID, "OAuth client `id` (required)")
	fs.StringVar(&c.ClientSecretFile, "client-secret-file", c.ClientSecretFile, "`file` holding the client secret; \"none\" for a public client (PKCE only); GATEHOUSE_CLIENT_SECRET may hold the secret itself; empty with --broker-url")
	fs.Var(&listValue{p: &c.RedirectURLs}, "redirect-url", "exact external callback `URL` registered at the IdP, e.g. https://app.example.com/_gatehouse/callback; repeat for several hosts, chosen by exact Host match (required)")
	fs.StringVar(&c.CookieSecretFile, "cookie-secret-file", c.CookieSecretFile, "`file` with one secret of at least 32 bytes a line: the first seals new cookies, later ones are still accepted (rotation) (required)")
	fs.StringVar(&c.CookieName, "cookie-name", c.CookieName, "session cookie `name` (default __Host-gatehouse when --cookie-secure, else gatehouse)")
	fs.Var(&boolValue{p: &c.CookieSecure}, "cookie-secure", "mark cookies Secure; turn off only for plain-HTTP local development")
	fs.StringVar(&c.SessionStore, "session-store", c.SessionStore, "`kind` of session store: cookie (encrypted cookie) or redis (opaque id in the cookie, tokens server side)")
	fs.StringVar(&c.RedisURL, "redis-url", c.RedisURL, "redis:// or rediss:// `URL` of the shared session store; add ?master_name=NAME&addr=HOST:PORT for Sentinel, ?cluster=true&addr=HOST:PORT for Cluster; the password may come from GATEHOUSE_REDIS_PASSWORD")
	fs.StringVar(&c.RedisKeyPrefix, "redis-key-prefix", c.RedisKeyPrefix, "`prefix` of every Redis key the session store writes; give each app (or namespace) its own, with a Redis user limited to it")
	fs.Var(&boolValue{p: &c.RedisClientCache}, "redis-client-cache", "keep session records in memory between requests, invalidated by Redis itself on every replica when any replica changes or deletes them (server-assisted client-side caching, RESP3 CLIENT TRACKING); off reads Redis on every request")
	fs.StringVar(&c.Scopes, "scopes", c.Scopes, "space-separated OAuth `scopes`; must include openid")
	fs.Var(&commaValue{p: &c.AllowedEmails}, "allowed-emails", "comma-separated `emails` allowed in; empty admits any authenticated user")
	fs.Var(&commaValue{p: &c.AllowedEmailDomains}, "allowed-email-domains", "comma-separated email `domains` allowed in (exact match, no subdomains)")
	fs.Var(&commaValue{p: &c.AllowedGroups}, "allowed-groups", "comma-separated `groups` allowed in (any one admits)")
	fs.StringVar(&c.GroupsClaim, "groups-claim", c.GroupsClaim, "ID token / userinfo `claim` holding the user's groups")
	fs.Var(&listValue{p: &c.SkipAuthPaths}, "skip-auth-path", "`regexp` on the normalised path of requests that pass without authentication; repeatable")
	fs.Var(&boolValue{p: &c.PassAccessToken}, "pass-access-token", "also send Authorization: Bearer <access token> upstream")
	fs.StringVar(&c.PathPrefix, "path-prefix", c.PathPrefix, "`path` under which the proxy's own endpoints live")
	fs.StringVar(&c.MetricsAddress, "metrics-address", c.MetricsAddress, "`address` serving /metrics, /healthz and /readyz, never behind auth")
	fs.Var(&durationValue{p: &c.SessionLifetime}, "session-lifetime", "how long a login lasts, whatever the tokens say")
	fs.StringVar(&c.LogoutRedirect, "logout-redirect", c.LogoutRedirect, "what logout does, by `mode`: local (back to /) or idp (RP-initiated logout at the IdP)")
	fs.StringVar(&c.PostLogoutRedirectURL, "post-logout-redirect-url", c.PostLogoutRedirectURL, "exact `URL` the IdP returns to after idp logout (default the site's /)")
	fs.StringVar(&c.TokenAudience, "token-audience", c.TokenAudience, "`aud` of page tokens from <prefix>/token (default the upstream)")
	fs.Var(&durationValue{p: &c.ShutdownTimeout}, "shutdown-timeout", "how long SIGTERM drains in-flight requests")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log `level`: debug, info, warn or error")
	fs.StringVar(&c.BrokerURL, "broker-url", c.BrokerURL, "https `URL` of gatehouse broker for this provider, e.g. https://gatehouse-broker.gatehouse.svc/v1/providers/default; code exchange, refresh and revocation go there instead of the IdP, and the broker adds the client secret (leave --client-secret-file empty)")
	fs.StringVar(&c.BrokerTokenFile, "broker-token-file", c.BrokerTokenFile, "`file` with the projected ServiceAccount token the sidecar shows the broker as a bearer token; read for every broker request, so a rotated token is used at once")
	fs.StringVar(&c.BrokerCAFile, "broker-ca-file", c.BrokerCAFile, "PEM `file` of the CAs the broker's certificate must chain to, reloaded when it changes (default the system roots)")
	fs.StringVar(&c.ConfigFile, "config", c.ConfigFile, "YAML `file` with the same keys as the flags; its policy keys (allowed-*, skip-auth-path) are reloaded on change")
}

// policyKeys are the flags a --config file may change at run time.
var policyKeys = []string{"allowed-emails", "allowed-email-domains", "allowed-groups", "skip-auth-path"}

// ValidatePolicy checks the access policy settings alone (allowed-*,
// skip-auth-path) with the rules the proxy applies; each error starts with
// the setting's name. The controller checks annotations with it, so the
// two can never disagree on what is valid.
func (c Config) ValidatePolicy() error {
	_, err := authz.New(c.PolicySpec())
	return err
}

// EffectiveCookieName is --cookie-name, or its default for --cookie-secure.
func (c Config) EffectiveCookieName() string {
	switch {
	case c.CookieName != "":
		return c.CookieName
	case c.CookieSecure:
		return "__Host-gatehouse"
	default:
		return "gatehouse"
	}
}

// EffectiveTokenAudience is --token-audience, or the upstream.
func (c Config) EffectiveTokenAudience() string {
	if c.TokenAudience != "" {
		return c.TokenAudience
	}
	return c.Upstream
}

// PolicySpec is the access policy part of the configuration.
func (c Config) PolicySpec() authz.Spec {
	return authz.Spec{
		AllowedEmails:       c.AllowedEmails,
		AllowedEmailDomains: c.AllowedEmailDomains,
		AllowedGroups:       c.AllowedGroups,
		SkipAuthPaths:       c.SkipAuthPaths,
	}
}

var cookieNameRE = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`)

// Validate checks the configuration without touching files or the network,
// and reports every problem at once, each naming its flag.
func (c Config) Validate() error {
	var errs []error
	add := func(flag string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...)))
	}
	if err := checkAddress(c.ListenAddress); err != nil {
		add("listen-address", "%v", err)
	}
	if err := checkAddress(c.MetricsAddress); err != nil {
		add("metrics-address", "%v", err)
	} else if sameListener(c.ListenAddress, c.MetricsAddress) {
		add("metrics-address", "%q must not be the --listen-address: metrics are never served behind auth", c.MetricsAddress)
	}
	if c.Upstream == "" {
		add("upstream", "required: the app's URL, e.g. http://127.0.0.1:8080")
	} else if u, err := parseAbsURL(c.Upstream); err != nil {
		add("upstream", "%v", err)
	} else if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		add("upstream", "%q must be scheme://host:port without a path or query", c.Upstream)
	}
	if c.IssuerURL == "" {
		add("issuer-url", "required: the OIDC issuer, e.g. https://login.example.com")
	} else if u, err := parseAbsURL(c.IssuerURL); err != nil {
		add("issuer-url", "%v", err)
	} else if u.Scheme != "https" && !isLoopback(u.Hostname()) {
		add("issuer-url", "%q must use https (http only for loopback addresses, in development)", c.IssuerURL)
	}
	if c.ClientID == "" {
		add("client-id", "required: the OAuth client id registered at the IdP")
	}
	if c.BrokerURL != "" {
		c.validateBroker(add)
	} else {
		if c.ClientSecretFile == "" && len(c.ClientSecret) == 0 {
			add("client-secret-file", "required: a file with the client secret, GATEHOUSE_CLIENT_SECRET, or \"none\" for a public client")
		}
		if c.BrokerTokenFile != DefaultBrokerTokenFile {
			add("broker-token-file", "%q given without --broker-url: only a sidecar that goes through the broker uses a token", c.BrokerTokenFile)
		}
		if c.BrokerCAFile != "" {
			add("broker-ca-file", "%q given without --broker-url: only a sidecar that goes through the broker uses it", c.BrokerCAFile)
		}
	}
	prefixErr := c.validatePrefix()
	if prefixErr != nil {
		add("path-prefix", "%v", prefixErr)
	}
	if len(c.RedirectURLs) == 0 {
		add("redirect-url", "required: the exact callback URL registered at the IdP, e.g. https://app.example.com%s/callback", c.PathPrefix)
	}
	hosts := map[string]bool{}
	for _, raw := range c.RedirectURLs {
		u, err := parseAbsURL(raw)
		if err != nil {
			add("redirect-url", "%v", err)
			continue
		}
		if c.CookieSecure && u.Scheme != "https" {
			add("redirect-url", "%q must use https while --cookie-secure is on", raw)
		}
		// RawPath is set when the path is escaped other than the plain way
		// (/_gatehouse%2Fcallback, /_gatehouse/c%61llback): the IdP would
		// send the browser to a path the proxy does not route as its
		// callback. With a bad --path-prefix there is no right path.
		if want := c.PathPrefix + "/callback"; prefixErr == nil && (u.Path != want || u.RawPath != "") {
			add("redirect-url", "%q must have the path %s (the proxy's callback under --path-prefix)", raw, want)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			add("redirect-url", "%q must not have a query or fragment", raw)
		}
		h := strings.ToLower(u.Host)
		if hosts[h] {
			add("redirect-url", "host %q is given twice", u.Host)
		}
		hosts[h] = true
	}
	if c.CookieSecretFile == "" {
		add("cookie-secret-file", "required: a file with at least 32 random bytes, e.g. made with: head -c 32 /dev/urandom | base64 > cookie-secret")
	}
	name := c.EffectiveCookieName()
	switch {
	case !cookieNameRE.MatchString(name):
		add("cookie-name", "%q is not a valid cookie name", name)
	// Browsers match the prefixes case-insensitively (RFC 6265bis 4.1.3).
	case hasPrefixFold(name, "__Host-") && !c.CookieSecure:
		add("cookie-name", "%q needs --cookie-secure (browsers drop __Host- cookies without Secure)", name)
	case hasPrefixFold(name, "__Secure-") && !c.CookieSecure:
		add("cookie-name", "%q needs --cookie-secure", name)
	}
	switch c.SessionStore {
	case StoreCookie:
	case StoreRedis:
		if c.RedisURL == "" {
			add("redis-url", "required when --session-store=redis")
		}
	default:
		add("session-store", "%q is not cookie or redis", c.SessionStore)
	}
	if c.RedisKeyPrefix == "" || strings.ContainsAny(c.RedisKeyPrefix, " \t\r\n*?[]\\") {
		add("redis-key-prefix", "%q is empty or holds spaces or glob characters", c.RedisKeyPrefix)
	}
	if c.RedisURL != "" {
		if err := redisstore.ValidateURL(c.RedisURL); err != nil {
			add("redis-url", "%v (forms: redis://host:6379/0, rediss://..., ?master_name=NAME&addr=... for Sentinel, ?cluster=true&addr=... for Cluster)", err)
		}
	}
	if !slices.Contains(strings.Fields(c.Scopes), "openid") {
		add("scopes", "%q must include openid", c.Scopes)
	}
	if strings.TrimSpace(c.GroupsClaim) == "" {
		add("groups-claim", "must not be empty")
	}
	if err := c.ValidatePolicy(); err != nil {
		for _, e := range unjoin(err) {
			errs = append(errs, fmt.Errorf("--%w", e))
		}
	}
	if c.SessionLifetime < time.Minute {
		add("session-lifetime", "%v is too short (at least 1m)", c.SessionLifetime)
	}
	switch c.LogoutRedirect {
	case LogoutLocal, LogoutIdP:
	default:
		add("logout-redirect", "%q is not local or idp", c.LogoutRedirect)
	}
	if c.PostLogoutRedirectURL != "" {
		if _, err := parseAbsURL(c.PostLogoutRedirectURL); err != nil {
			add("post-logout-redirect-url", "%v", err)
		}
	}
	if c.ShutdownTimeout < 0 {
		add("shutdown-timeout", "must not be negative")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		add("log-level", "%v", err)
	}
	return errors.Join(errs...)
}

// validateBroker checks the settings of a sidecar that goes through the
// token broker.
func (c Config) validateBroker(add func(flag string, format string, args ...any)) {
	if u, err := parseAbsURL(c.BrokerURL); err != nil {
		add("broker-url", "%v", err)
	} else if u.Scheme != "https" && !isLoopback(u.Hostname()) {
		// The sidecar's ServiceAccount token and the users' refresh tokens
		// travel on this connection.
		add("broker-url", "%q must use https (http only for loopback addresses, in development)", c.BrokerURL)
	} else if u.RawQuery != "" || u.Fragment != "" {
		add("broker-url", "%q must not have a query or fragment", c.BrokerURL)
	}
	if c.ClientSecretFile != "" {
		add("client-secret-file", "must be empty with --broker-url, not %q: the broker holds the client secret", c.ClientSecretFile)
	}
	if len(c.ClientSecret) != 0 {
		add("client-secret-file", "%s must be unset with --broker-url: the broker holds the client secret", clientSecretEnv)
	}
	if strings.TrimSpace(c.BrokerTokenFile) == "" {
		add("broker-token-file", "required with --broker-url: the projected ServiceAccount token shown to the broker")
	}
}

func (c Config) validatePrefix() error {
	p := c.PathPrefix
	switch {
	case p == "" || p[0] != '/':
		return fmt.Errorf("%q must start with /", p)
	case p == "/" || strings.HasSuffix(p, "/"):
		return fmt.Errorf("%q must not be / or end with /", p)
	case strings.ContainsAny(p, "?#%\\ ") || strings.Contains(p, "/../") || strings.Contains(p, "/./") || strings.Contains(p, "//"):
		return fmt.Errorf("%q must be a plain path", p)
	}
	return nil
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func checkAddress(addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%q is not host:port (e.g. :4180 or 127.0.0.1:4180)", addr)
	}
	return nil
}

// parseAbsURL accepts an absolute http or https URL with a host.
func parseAbsURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL", raw)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q must be an absolute http:// or https:// URL", raw)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%q must not carry credentials", raw)
	}
	return u, nil
}

// sameListener reports whether two valid host:port addresses would bind
// the same socket. Port 0 picks a free port, so it never collides.
func sameListener(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	if pa != pb || pa == "0" {
		return false
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return strings.EqualFold(ha, hb) || wildcard(ha) || wildcard(hb)
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
