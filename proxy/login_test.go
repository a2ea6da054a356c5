package proxy_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse-dev/gatehouse/proxy"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/identity"
)

func TestLoginEndToEnd(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.waitDiscovered()
	b := newBrowser(t)
	back := h.login(b, "/reports?q=1&x=%2F", "ann")
	if back != "/reports?q=1&x=%2F" {
		t.Fatalf("after login the browser goes to %q, want the page first asked for", back)
	}
	e := h.echo(b, "/reports?q=1")
	want := map[string]string{
		"X-Auth-Request-User":               "ann",
		"X-Auth-Request-Email":              "ann@example.com",
		"X-Auth-Request-Preferred-Username": "ann",
		"X-Auth-Request-Groups":             "developers",
	}
	for k, v := range want {
		if got := e.Header.Get(k); got != v {
			t.Errorf("upstream %s = %q, want %q", k, got, v)
		}
	}
	if e.Path != "/reports" || e.Query != "q=1" {
		t.Errorf("upstream got %s?%s", e.Path, e.Query)
	}
	if e.Host != strings.TrimPrefix(h.url, "http://") {
		t.Errorf("upstream Host = %q, want the browser's %q", e.Host, h.url)
	}
	if e.Header.Get("X-Forwarded-Proto") != "http" || e.Header.Get("X-Forwarded-Host") == "" {
		t.Errorf("X-Forwarded-* not set: %v", e.Header)
	}

	// The app can verify the identity assertion with the proxy's JWKS.
	claims := verifyAssertion(t, h, e.Header.Get("X-Gatehouse-Identity"))
	if claims.Issuer != h.url || claims.Audience != h.up.URL || claims.Subject != "ann" ||
		claims.Email != "ann@example.com" || !cmp.Equal(claims.Groups, []string{"developers"}) {
		t.Errorf("assertion claims = %+v", claims)
	}
	if life := claims.Expiry - claims.IssuedAt; life <= 0 || life > 300 {
		t.Errorf("assertion lives %ds, want at most 300", life)
	}
	if exp := time.Unix(claims.Expiry, 0); exp.Before(time.Now()) {
		t.Errorf("assertion already expired at %v", exp)
	}

	// userinfo shows the identity and no token.
	resp := b.do(http.MethodGet, h.url+"/_gatehouse/userinfo", false)
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"sub":"ann"`) || strings.Contains(body, "eyJ") || strings.Contains(body, "token") {
		t.Errorf("userinfo = %d %s", resp.StatusCode, body)
	}
}

// verifyAssertion checks the X-Gatehouse-Identity JWT against the keys at
// <prefix>/jwks.json, fetched without a session.
func verifyAssertion(t *testing.T, h *harness, token string) identity.Claims {
	t.Helper()
	resp, err := http.Get(h.url + "/_gatehouse/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("jwks.json status %d", resp.StatusCode)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("assertion is not an ES256 JWS: %v", err)
	}
	keys := set.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) != 1 {
		t.Fatalf("assertion kid %q not in jwks.json", jws.Signatures[0].Header.KeyID)
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		t.Fatalf("assertion does not verify: %v", err)
	}
	var c identity.Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNoSessionNavigationRedirectsToIdP(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.waitDiscovered()
	states := map[string]bool{}
	for range 2 {
		b := newBrowser(t)
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			auth := location(t, b.do(method, h.url+"/app", true))
			q := auth.Query()
			checks := map[string]string{
				"response_type":         "code",
				"client_id":             h.idp.ClientID,
				"redirect_uri":          h.url + "/_gatehouse/callback",
				"code_challenge_method": "S256",
				"scope":                 "openid email profile",
			}
			for k, v := range checks {
				if q.Get(k) != v {
					t.Errorf("%s: authorize %s = %q, want %q", method, k, q.Get(k), v)
				}
			}
			for _, k := range []string{"state", "nonce", "code_challenge"} {
				if len(q.Get(k)) < 22 {
					t.Errorf("%s: authorize %s = %q, want a fresh random value", method, k, q.Get(k))
				}
			}
			if states[q.Get("state")] {
				t.Errorf("state %q reused", q.Get("state"))
			}
			states[q.Get("state")] = true
		}
	}
}

func TestNoSessionNonNavigationGets401(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.waitDiscovered()
	tests := []struct {
		name, method, accept string
	}{
		{"no accept", http.MethodGet, ""},
		{"star only", http.MethodGet, "*/*"},
		{"json", http.MethodGet, "application/json"},
		{"post with html", http.MethodPost, "text/html"},
		{"html refused with q=0", http.MethodGet, "text/html;q=0, application/json"},
		{"xhtml only", http.MethodGet, "application/xhtml+xml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBrowser(t)
			var headers []string
			if tc.accept != "" {
				headers = []string{"Accept", tc.accept}
			}
			resp := b.do(tc.method, h.url+"/api/items", false, headers...)
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if strings.TrimSpace(body) != `{"error":"unauthenticated"}` {
				t.Errorf("body %q", body)
			}
		})
	}
	if n := h.up.requests.Load(); n != 0 {
		t.Errorf("upstream called %d times without a session", n)
	}
}

func TestOpenRedirectAfterLogin(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.waitDiscovered()
	payloads := []string{
		"//evil.example", "/\\evil.example", "https://evil.example", "https:evil.example",
		"/%2F%2Fevil.example", "/\t/evil.example", "/\n/evil.example", "\t//evil.example",
		"///evil.example", "/%5Cevil.example", "javascript:alert(1)", "",
	}
	for _, p := range payloads {
		t.Run(p, func(t *testing.T) {
			b := newBrowser(t)
			auth := location(t, b.get(h.url+"/_gatehouse/start?rd="+url.QueryEscape(p)))
			cb := location(t, b.get(auth.String()))
			back := rawLocation(t, b.get(cb.String()))
			if back != "/" {
				t.Errorf("rd=%q: browser sent to %q, want /", p, back)
			}
		})
	}
	t.Run("protocol-relative original path", func(t *testing.T) {
		b := newBrowser(t)
		req, _ := http.NewRequest(http.MethodGet, h.url+"/", nil)
		req.URL.Path = "//evil.example/x"
		req.Header.Set("Accept", "text/html")
		resp, err := b.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		auth := location(t, resp)
		cb := location(t, b.get(auth.String()))
		if back := rawLocation(t, b.get(cb.String())); back != "/" {
			t.Errorf("original path //evil.example/x: browser sent to %q, want /", back)
		}
	})
	t.Run("safe rd kept byte for byte", func(t *testing.T) {
		b := newBrowser(t)
		rd := "/a%20b/c?d=%2F&e=1#frag"
		auth := location(t, b.get(h.url+"/_gatehouse/start?rd="+url.QueryEscape(rd)))
		cb := location(t, b.get(auth.String()))
		if back := rawLocation(t, b.get(cb.String())); back != rd {
			t.Errorf("browser sent to %q, want %q", back, rd)
		}
	})
}

func TestSeveralTabsLogInAtOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.waitDiscovered()
	b := newBrowser(t)
	var callbacks []string
	for _, path := range []string{"/one", "/two", "/three"} {
		callbacks = append(callbacks, h.loginSteps(b, path, "ann").String())
	}
	// Complete them in reverse order: each must land on its own page.
	for i := len(callbacks) - 1; i >= 0; i-- {
		back := rawLocation(t, b.get(callbacks[i]))
		if want := []string{"/one", "/two", "/three"}[i]; back != want {
			t.Errorf("tab %d landed on %q, want %q", i, back, want)
		}
	}
}

func TestLoginCookiesBounded(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.waitDiscovered()
	b := newBrowser(t)
	for range 15 {
		resp := b.get(h.url + "/page")
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("status %d", resp.StatusCode)
		}
		for _, c := range resp.Cookies() {
			if c.MaxAge > 600 {
				t.Errorf("login cookie %s Max-Age %d, want at most 600", c.Name, c.MaxAge)
			}
			if c.MaxAge > 0 && (!c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "") {
				t.Errorf("login cookie attributes: %s", c.String())
			}
		}
	}
	u, _ := url.Parse(h.url)
	n := 0
	for _, c := range b.jar.Cookies(u) {
		if strings.HasPrefix(c.Name, "gatehouse-login-") {
			n++
		}
	}
	if n != 10 {
		t.Errorf("browser holds %d login cookies after 15 starts, want 10", n)
	}
}

func TestIdentityHeadersCannotBeSpoofed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withConfig(func(c *proxy.Config) { c.SkipAuthPaths = []string{"^/public/"} }))
	h.waitDiscovered()
	spoof := []string{
		"X-Auth-Request-User", "mallory",
		"X-Auth-Request-Email", "mallory@evil.example",
		"X-Auth-Request-Groups", "admins",
		"X-Auth-Request-Preferred-Username", "mallory",
		"X-Gatehouse-Identity", "forged",
		"X_Auth_Request_User", "mallory",
		"x_auth_request_email", "mallory@evil.example",
		"X-Auth-Request-Extra", "1",
		"X-Gatehouse-Anything", "1",
		"X_Gatehouse_Identity", "forged",
		"X-Forwarded-Access-Token", "forged",
		"X_Forwarded_Access_Token", "forged",
		"X-Forwarded-User", "mallory",
		"X-Forwarded-Email", "mallory@evil.example",
	}
	reserved := func(name string) bool {
		n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
		return strings.HasPrefix(n, "x-auth-request-") || strings.HasPrefix(n, "x-gatehouse-") ||
			n == "x-forwarded-access-token" || n == "x-forwarded-user" || n == "x-forwarded-email"
	}
	check := func(t *testing.T, e echoed, loggedIn bool) {
		t.Helper()
		for name, values := range e.Header {
			if !reserved(name) {
				continue
			}
			for _, v := range values {
				if strings.Contains(v, "mallory") || v == "forged" || v == "admins" || v == "1" {
					t.Errorf("spoofed %s: %q reached the upstream", name, v)
				}
			}
			if !loggedIn {
				t.Errorf("reserved header %s reached the upstream on a skip-auth path", name)
			}
		}
		if loggedIn && e.Header.Get("X-Auth-Request-User") != "ann" {
			t.Errorf("X-Auth-Request-User = %q, want ann", e.Header.Get("X-Auth-Request-User"))
		}
	}
	t.Run("skip-auth path", func(t *testing.T) {
		check(t, h.echo(newBrowser(t), "/public/x", spoof...), false)
	})
	t.Run("logged in", func(t *testing.T) {
		b := newBrowser(t)
		h.login(b, "/", "ann")
		check(t, h.echo(b, "/private", spoof...), true)
	})
	t.Run("no session", func(t *testing.T) {
		before := h.up.requests.Load()
		resp := newBrowser(t).do(http.MethodGet, h.url+"/private", false, spoof...)
		if resp.StatusCode != http.StatusUnauthorized || h.up.requests.Load() != before {
			t.Errorf("spoofed headers without a session: status %d, upstream called %d times", resp.StatusCode, h.up.requests.Load()-before)
		}
	})
}

func TestGatehouseCookiesStripped(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	h.get(b, "/page") // starts a login-state cookie? no: logged in
	e := h.echo(b, "/x", "Cookie", "app=1; theme=dark")
	cookies := strings.Join(e.Header.Values("Cookie"), "; ")
	if strings.Contains(cookies, "gatehouse") {
		t.Errorf("upstream received Gatehouse cookies: %q", cookies)
	}
	if !strings.Contains(cookies, "app=1") || !strings.Contains(cookies, "theme=dark") {
		t.Errorf("upstream lost the app's cookies: %q", cookies)
	}
}

func (h *harness) get(b *browser, path string) *http.Response {
	resp := b.get(h.url + path)
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp
}

func TestForwardedHeaders(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withConfig(func(c *proxy.Config) { c.SkipAuthPaths = []string{"^/public"} }))
	b := newBrowser(t)
	direct := h.echo(b, "/public")
	if direct.Header.Get("X-Forwarded-For") != "127.0.0.1" || direct.Header.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("without an ingress: %v", direct.Header)
	}
	behind := h.echo(b, "/public", "X-Forwarded-For", "203.0.113.7", "X-Forwarded-Proto", "https", "X-Forwarded-Host", "app.example.com")
	if got := behind.Header.Get("X-Forwarded-For"); got != "203.0.113.7, 127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want the ingress's chain with the ingress appended", got)
	}
	if behind.Header.Get("X-Forwarded-Proto") != "https" || behind.Header.Get("X-Forwarded-Host") != "app.example.com" {
		t.Errorf("ingress's X-Forwarded-Proto/Host not kept: %v", behind.Header)
	}
}
