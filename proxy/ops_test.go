package proxy_test

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/proxy"
	"github.com/gatehouse-dev/gatehouse/proxy/idptest"
)

// eventually polls f until it returns "" or the timeout passes, and fails
// with f's last message.
func eventually(t *testing.T, timeout time.Duration, f func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, msg)
		}
		time.Sleep(20 * time.Millisecond) //nolint:forbidigo // polling a real server
	}
}

// TestPolicyReload: the policy keys of --config apply within seconds of a
// change, through a Kubernetes-style symlink swap; a broken file keeps the
// last good policy.
func TestPolicyReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// Kubernetes layout: config.yaml -> ..data/config.yaml, ..data -> ..v1
	write := func(version, content string) {
		vdir := filepath.Join(dir, version)
		if err := os.MkdirAll(vdir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vdir, "config.yaml"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(version, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	write("..v1", "allowed-groups: [admins]\n")
	if err := os.Symlink(filepath.Join("..data", "config.yaml"), filepath.Join(dir, "config.yaml")); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, withConfig(func(c *proxy.Config) {
		c.ConfigFile = filepath.Join(dir, "config.yaml")
		c.AllowedGroups = []string{"admins"} // what Load would have read from the file
	}))
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann") // ann is in "developers"
	status := func() int {
		resp := b.do(http.MethodGet, h.url+"/x", false)
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	if s := status(); s != http.StatusForbidden {
		t.Fatalf("before reload: status %d, want 403", s)
	}
	write("..v2", "allowed-groups: [admins, developers]\n")
	eventually(t, 10*time.Second, func() string {
		if s := status(); s != http.StatusOK {
			return "policy change not applied: status " + http.StatusText(s)
		}
		return ""
	})
	write("..v3", "allowed-groups: [admins\nnot yaml: [\n")
	eventually(t, 10*time.Second, func() string {
		if !strings.Contains(h.logs.String(), "Config file rejected") {
			return "broken config file not reported"
		}
		return ""
	})
	if s := status(); s != http.StatusOK {
		t.Errorf("after a broken edit: status %d, want the last good policy (200)", s)
	}
	write("..v4", "allowed-groups: [admins]\nunknown-key: 1\n")
	eventually(t, 10*time.Second, func() string {
		if strings.Count(h.logs.String(), "Config file rejected") < 2 {
			return "config file with an unknown key not reported"
		}
		return ""
	})
	if s := status(); s != http.StatusOK {
		t.Errorf("after an edit with an unknown key: status %d, want 200", s)
	}
	write("..v5", "allowed-groups: [admins]\n")
	eventually(t, 10*time.Second, func() string {
		if s := status(); s != http.StatusForbidden {
			return "narrowed policy not applied"
		}
		return ""
	})
}

// TestIdPDownAtStart: the proxy listens and serves existing sessions while
// the IdP is unreachable; only new logins wait, with 503.
func TestIdPDownAtStart(t *testing.T) {
	t.Parallel()
	idp := idptest.New(t)
	secret := strings.Repeat("k", 40)
	// A session from an earlier proxy sharing the cookie secret.
	first := newHarness(t, withIdP(idp), withSecret(secret))
	first.waitDiscovered()
	b := newBrowser(t)
	first.login(b, "/", "ann")
	cookie := ""
	for _, c := range b.jar.Cookies(mustURL(t, first.url)) {
		if c.Name == "gatehouse" {
			cookie = c.Value
		}
	}
	idp.SetDown(true)
	h := newHarness(t, withIdP(idp), withSecret(secret))
	resp := newBrowser(t).do(http.MethodGet, h.url+"/x", false, "Cookie", "gatehouse="+cookie)
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"X-Auth-Request-User":["ann"]`) {
		t.Fatalf("existing session during IdP outage: status %d, %.200s", resp.StatusCode, body)
	}
	nav := newBrowser(t).get(h.url + "/x")
	if body := readBody(t, nav); nav.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "Start again") {
		t.Errorf("new login during outage: status %d, %.300s", nav.StatusCode, body)
	}
	r, err := http.Get(h.metrics + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, r); r.StatusCode != http.StatusOK || !strings.Contains(body, "not yet discovered") {
		t.Errorf("readyz during outage: %d %q", r.StatusCode, body)
	}
	idp.SetDown(false)
	h.waitDiscovered()
	if back := h.login(newBrowser(t), "/after", "ann"); back != "/after" {
		t.Errorf("login after the IdP returned went to %q", back)
	}
}

func TestTokenEndpointFailures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		idpStatus, want int
	}{
		{http.StatusInternalServerError, http.StatusBadGateway},
		{http.StatusServiceUnavailable, http.StatusBadGateway},
		{http.StatusTooManyRequests, http.StatusBadGateway},
		// A 400 that is not an OAuth refusal (server_error) is a failure.
		{http.StatusBadRequest, http.StatusBadGateway},
	} {
		t.Run(http.StatusText(tc.idpStatus), func(t *testing.T) {
			t.Parallel()
			idp := idptest.New(t)
			h := newHarness(t, withIdP(idp))
			h.waitDiscovered()
			b := newBrowser(t)
			cb := h.loginSteps(b, "/", "ann")
			idp.SetTokenStatus(tc.idpStatus)
			expectRejectedCallback(t, b.get(cb.String()), tc.want)
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		idp := idptest.New(t)
		h := newHarness(t, withIdP(idp))
		h.waitDiscovered()
		b := newBrowser(t)
		cb := h.loginSteps(b, "/", "ann")
		idp.SetDown(true)
		resp := b.get(cb.String())
		if resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("status %d, want 502 or 503", resp.StatusCode)
		}
	})
}

func TestUserinfoFillsMissingClaims(t *testing.T) {
	t.Parallel()
	idp := idptest.New(t)
	idp.SetIDTokenHook(func(c map[string]any) { delete(c, "groups"); delete(c, "email") })
	h := newHarness(t, withIdP(idp))
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	e := h.echo(b, "/")
	if e.Header.Get("X-Auth-Request-Groups") != "developers" || e.Header.Get("X-Auth-Request-Email") != "ann@example.com" {
		t.Errorf("claims not filled from userinfo: %v", e.Header)
	}

	t.Run("userinfo never overrides the ID token", func(t *testing.T) {
		idp := idptest.New(t)
		idp.SetIDTokenHook(func(c map[string]any) { delete(c, "groups") })
		idp.SetUserinfoHook(func(c map[string]any) { c["email"] = "admin@example.com" })
		h := newHarness(t, withIdP(idp))
		h.waitDiscovered()
		b := newBrowser(t)
		h.login(b, "/", "ann")
		if got := h.echo(b, "/").Header.Get("X-Auth-Request-Email"); got != "ann@example.com" {
			t.Errorf("email %q, want the ID token's", got)
		}
	})
	t.Run("differing sub fails the login", func(t *testing.T) {
		idp := idptest.New(t)
		idp.SetIDTokenHook(func(c map[string]any) { delete(c, "groups") })
		idp.SetUserinfoHook(func(c map[string]any) { c["sub"] = "someone-else" })
		h := newHarness(t, withIdP(idp))
		h.waitDiscovered()
		b := newBrowser(t)
		cb := h.loginSteps(b, "/", "ann")
		expectRejectedCallback(t, b.get(cb.String()), http.StatusForbidden)
	})
}

func TestSecureCookieAttributes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withConfig(func(c *proxy.Config) {
		c.CookieSecure = true
		c.RedirectURLs = []string{"https://app.example/_gatehouse/callback"}
	}))
	h.waitDiscovered()
	b := newBrowser(t)
	start := b.get(h.url + "/x")
	auth := location(t, start)
	var loginCookie *http.Cookie
	for _, c := range start.Cookies() {
		loginCookie = c
	}
	if loginCookie == nil || !strings.HasPrefix(loginCookie.Name, "__Host-gatehouse-login-") || !loginCookie.Secure ||
		!loginCookie.HttpOnly || loginCookie.SameSite != http.SameSiteLaxMode || loginCookie.Path != "/" || loginCookie.Domain != "" || loginCookie.MaxAge > 600 {
		t.Fatalf("login cookie: %v", loginCookie)
	}
	cb := location(t, b.get(auth.String()))
	// The browser would follow https://app.example; send it to the
	// listener with the cookie, as the browser would.
	cb.Scheme, cb.Host = "http", strings.TrimPrefix(h.url, "http://")
	resp := b.do(http.MethodGet, cb.String(), true, "Cookie", loginCookie.Name+"="+loginCookie.Value)
	location(t, resp)
	var sess *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "__Host-gatehouse" {
			sess = c
		}
	}
	if sess == nil || !sess.Secure || !sess.HttpOnly || sess.SameSite != http.SameSiteLaxMode || sess.Path != "/" || sess.Domain != "" {
		t.Fatalf("session cookie: %v", sess)
	}
	if sess.MaxAge <= 0 || sess.MaxAge > int((12*time.Hour).Seconds()) {
		t.Errorf("session cookie Max-Age %d", sess.MaxAge)
	}
}

func TestMetricsAndHealth(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	h.echo(b, "/")
	newBrowser(t).do(http.MethodGet, h.url+"/x", false, "Cookie", "gatehouse=bad")
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(h.metrics + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
	resp, err := http.Get(h.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	for _, want := range []string{
		`gatehouse_proxy_requests_total{result="proxied"} 1`,
		`gatehouse_proxy_requests_total{result="unauthenticated"} 1`,
		`gatehouse_proxy_logins_total{result="succeeded"} 1`,
		`gatehouse_proxy_idp_discovered 1`,
		`gatehouse_proxy_request_duration_seconds_count 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, grepLines(body, "gatehouse_"))
		}
	}
	// The metrics endpoints are not on the main listener.
	if r := newBrowser(t).do(http.MethodGet, h.url+"/metrics", false); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("/metrics on the main listener: %d, want 401 (it is an app path)", r.StatusCode)
	}
}

// TestLogsCarryNoSecrets: a full login at debug level writes no token,
// code, state or cookie value.
func TestLogsCarryNoSecrets(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.waitDiscovered()
	b := newBrowser(t)
	cb := h.loginSteps(b, "/", "ann")
	location(t, b.get(cb.String()))
	h.echo(b, "/")
	logs := h.logs.String()
	q := cb.Query()
	secrets := map[string]string{"code": q.Get("code"), "state": q.Get("state"), "client secret": "test-secret"}
	for _, c := range b.jar.Cookies(mustURL(t, h.url)) {
		secrets["cookie "+c.Name] = c.Value[:min(len(c.Value), 32)]
	}
	for name, v := range secrets {
		if v != "" && strings.Contains(logs, v) {
			t.Errorf("logs contain the %s", name)
		}
	}
	if !strings.Contains(logs, `"msg":"Login succeeded"`) || !strings.Contains(logs, `"msg":"Request allowed"`) {
		t.Errorf("auth decisions not logged:\n%s", logs)
	}
}

func mustURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func grepLines(s, substr string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, substr) && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestEmailVerifiedFromUserinfo: an ID token with an email but no
// email_verified takes email_verified from userinfo (DESIGN.md behaviour
// 4), at login and after a refresh, so an address userinfo calls
// unverified satisfies no domain rule and is not forwarded.
func TestEmailVerifiedFromUserinfo(t *testing.T) {
	t.Parallel()
	idp := idptest.New(t)
	unverified := false
	idp.AddUser(idptest.User{Subject: "eve", Email: "eve@example.com", EmailVerified: &unverified, Groups: []string{"developers"}})
	idp.SetIDTokenHook(func(c map[string]any) { delete(c, "email_verified") })
	idp.SetAccessTokenTTL(2 * time.Minute)
	clock := &testClock{}
	h := newHarness(t, withIdP(idp), withNow(clock.Now), withConfig(func(c *proxy.Config) { c.AllowedEmailDomains = []string{"example.com"} }))
	h.waitDiscovered()

	ann := newBrowser(t)
	h.login(ann, "/", "ann") // userinfo says verified
	if got := h.echo(ann, "/").Header.Get("X-Auth-Request-Email"); got != "ann@example.com" {
		t.Errorf("verified by userinfo: email %q", got)
	}
	eve := newBrowser(t)
	h.login(eve, "/", "eve")
	expectForbiddenJSON(t, eve.do(http.MethodGet, h.url+"/", false), "domains")
	cookie := sessionCookies(t, eve, h.url)
	clock.Advance(110 * time.Second) // the access token is due for refresh
	resp := raw(t, http.MethodGet, h.url+"/", cookie)
	if idp.TokenCalls("refresh_token") == 0 {
		t.Fatal("no refresh made")
	}
	expectForbiddenJSON(t, resp, "domains")

	t.Run("no domain rule: not forwarded", func(t *testing.T) {
		h := newHarness(t, withIdP(idp))
		h.waitDiscovered()
		b := newBrowser(t)
		h.login(b, "/", "eve")
		if got := h.echo(b, "/").Header.Get("X-Auth-Request-Email"); got != "" {
			t.Errorf("email unverified in userinfo forwarded: %q", got)
		}
	})
}
