package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/redistest"
	"github.com/gatehouse-dev/gatehouse/proxy"
	"github.com/gatehouse-dev/gatehouse/proxy/idptest"
)

// TestConnectionHeaderCannotDropIdentity: a client listing the identity
// headers in Connection (hop-by-hop) does not make the app receive a
// request without them.
func TestConnectionHeaderCannotDropIdentity(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	e := h.echo(b, "/x", "Connection", "X-Auth-Request-User, X-Auth-Request-Groups, X-Gatehouse-Identity")
	if e.Header.Get("X-Auth-Request-User") != "ann" || e.Header.Get("X-Gatehouse-Identity") == "" {
		t.Errorf("identity headers dropped through Connection: %v", e.Header)
	}
}

// TestDotSemicolonSegmentsRefused: "..;" and backslashes are refused, so
// a servlet container upstream cannot resolve a "public" path elsewhere.
func TestDotSemicolonSegmentsRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withConfig(func(c *proxy.Config) { c.SkipAuthPaths = []string{"^/public/"} }))
	for _, p := range []string{"/public/..;/admin", "/public/.;x/admin", "/public/..%3B/admin", "/public/..%5Cadmin", "/public/%5C..%5Cadmin"} {
		req, _ := http.NewRequest(http.MethodGet, h.url+"/", nil)
		req.URL.Opaque = p
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", p, resp.StatusCode)
		}
	}
	if n := h.up.requests.Load(); n != 0 {
		t.Errorf("upstream called %d times", n)
	}
}

// TestRefreshedCookieNotCacheable: a proxied response that carries the
// refreshed session cookie is marked private, whatever the app says.
func TestRefreshedCookieNotCacheable(t *testing.T) {
	t.Parallel()
	idp := idptest.New(t)
	idp.SetAccessTokenTTL(2 * time.Minute)
	clock := &testClock{}
	h := newHarness(t, withIdP(idp), withNow(clock.Now), withUpstreamHandler("/cached", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=86400")
		_, _ = w.Write([]byte("static"))
	}))
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	cookie := sessionCookies(t, b, h.url)
	plain := raw(t, http.MethodGet, h.url+"/cached", cookie)
	if plain.Header.Get("Cache-Control") != "public, max-age=86400" {
		t.Errorf("a response without a Gatehouse cookie lost the app's Cache-Control: %q", plain.Header.Get("Cache-Control"))
	}
	clock.Advance(110 * time.Second)
	resp := raw(t, http.MethodGet, h.url+"/cached", cookie)
	if len(resp.Header.Values("Set-Cookie")) == 0 {
		t.Fatal("no refreshed cookie")
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "private, no-store" {
		t.Errorf("Cache-Control %q on a response that sets the session cookie", cc)
	}
}

// TestTokenAndUserinfoFollowPolicy: a user refused by the policy gets no
// page token and no userinfo either.
func TestTokenAndUserinfoFollowPolicy(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withConfig(func(c *proxy.Config) { c.AllowedGroups = []string{"admins"} }))
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	cookie := sessionCookies(t, b, h.url)
	for _, p := range []string{"/_gatehouse/token", "/_gatehouse/userinfo"} {
		resp := raw(t, http.MethodGet, h.url+p, cookie, "Sec-Fetch-Site", "same-origin", "X-Requested-With", "XMLHttpRequest")
		expectForbiddenJSON(t, resp, "groups")
	}
}

// TestLogoutDuringRefreshStaysLoggedOut: with Redis, a refresh that
// finishes after a logout does not bring the session back.
func TestLogoutDuringRefreshStaysLoggedOut(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	idp := idptest.New(t)
	idp.SetAccessTokenTTL(2 * time.Minute)
	clock := &testClock{}
	release := make(chan struct{})
	var once sync.Once
	h := newHarness(t, withIdP(idp), withNow(clock.Now), withConfig(func(c *proxy.Config) { c.SessionStore, c.RedisURL = proxy.StoreRedis, rs.URL() }))
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	cookie := sessionCookies(t, b, h.url)
	idp.SetTokenDelay(func() { once.Do(func() { <-release }) })
	clock.Advance(110 * time.Second)
	done := make(chan int, 1)
	go func() { done <- raw(t, http.MethodGet, h.url+"/x", cookie).StatusCode }()
	eventually(t, 5*time.Second, func() string {
		if idp.TokenCalls("refresh_token") == 0 {
			return "refresh not started"
		}
		return ""
	})
	if resp := raw(t, http.MethodPost, h.url+"/_gatehouse/logout", cookie, "Origin", h.url); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	close(release)
	<-done
	if s := raw(t, http.MethodGet, h.url+"/x", cookie).StatusCode; s != http.StatusUnauthorized {
		t.Errorf("copied cookie after logout during a refresh: %d, want 401", s)
	}
}

// TestUpstreamDown: an app that does not answer gives 502 (JSON for API
// calls, a page for navigations), never a 500.
func TestUpstreamDown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withConfig(func(c *proxy.Config) { c.SkipAuthPaths = []string{"^/public"} }))
	h.up.Close()
	api := raw(t, http.MethodGet, h.url+"/public", "")
	if body := readBody(t, api); api.StatusCode != http.StatusBadGateway || !strings.Contains(body, "upstream_unavailable") {
		t.Errorf("API call with the app down: %d %s", api.StatusCode, body)
	}
	nav := raw(t, http.MethodGet, h.url+"/public", "", "Accept", "text/html")
	if body := readBody(t, nav); nav.StatusCode != http.StatusBadGateway || !strings.Contains(body, "not answering") {
		t.Errorf("navigation with the app down: %d %.200s", nav.StatusCode, body)
	}
}

// TestPublicClient: --client-secret-file=none logs in with PKCE alone,
// sending the client id in the form.
func TestPublicClient(t *testing.T) {
	t.Parallel()
	idp := idptest.New(t)
	idp.SetClientSecret("")
	h := newHarness(t, withIdP(idp), withConfig(func(c *proxy.Config) { c.ClientSecretFile = proxy.PublicClient }))
	h.waitDiscovered()
	b := newBrowser(t)
	if back := h.login(b, "/page", "ann"); back != "/page" {
		t.Fatalf("public client login went to %q", back)
	}
	if e := h.echo(b, "/page"); e.Header.Get("X-Auth-Request-User") != "ann" {
		t.Errorf("upstream saw %v", e.Header)
	}
}

// TestPathParametersNeverPublic: a path with ";" in any segment never
// matches --skip-auth-path, since servlet containers serve "/admin;.css"
// as "/admin" (DESIGN.md behaviour 13).
func TestPathParametersNeverPublic(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withConfig(func(c *proxy.Config) { c.SkipAuthPaths = []string{`\.(css|js|png)$`, "^/public/"} }))
	if s := raw(t, http.MethodGet, h.url+"/public/app.css", "").StatusCode; s != http.StatusOK {
		t.Fatalf("public asset: %d", s)
	}
	before := h.up.requests.Load()
	for _, p := range []string{"/admin;.css", "/admin%3B.css", "/admin%3b.js", "/admin;jsessionid=1/x.png", "/public/x;/../admin", "/public/;", "/admin/;.css"} {
		req, _ := http.NewRequest(http.MethodGet, h.url+"/", nil)
		req.URL.Opaque = p // sent as is
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", p, resp.StatusCode)
		}
	}
	if n := h.up.requests.Load() - before; n != 0 {
		t.Errorf("upstream called %d times for paths with parameters", n)
	}
}

// TestPathOverrideHeadersStripped: X-Original-URL and X-Rewrite-URL, which
// some frameworks serve instead of the request path, never reach the app,
// so a skip-auth path cannot be turned into another one.
func TestPathOverrideHeadersStripped(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withConfig(func(c *proxy.Config) { c.SkipAuthPaths = []string{"^/public/"} }))
	e := h.echo(newBrowser(t), "/public/x", "X-Original-URL", "/admin", "X-Rewrite-URL", "/admin", "x_original_url", "/admin", "X-Rewrite_Url", "/admin", "X-Original-Urls", "kept")
	for name := range e.Header {
		if n := strings.ToLower(strings.ReplaceAll(name, "_", "-")); n == "x-original-url" || n == "x-rewrite-url" {
			t.Errorf("%s reached the app", name)
		}
	}
	if e.Header.Get("X-Original-Urls") != "kept" {
		t.Errorf("an unrelated header was removed: %v", e.Header)
	}
}

// TestStalledRequestBodyTimesOut: a client that stops sending its request
// body half-way gets 408 once a read has waited the body read timeout,
// instead of holding the proxy's and the app's connections for ever.
func TestStalledRequestBodyTimesOut(t *testing.T) {
	t.Parallel()
	got := make(chan error, 1)
	h := newHarness(t, withConfig(func(c *proxy.Config) { c.SkipAuthPaths = []string{"^/public/"} }),
		withServer(func(s *proxy.Server) { proxy.SetBodyReadTimeout(s, 50*time.Millisecond) }),
		withUpstreamHandler("/public/upload", func(_ http.ResponseWriter, r *http.Request) {
			_, err := io.ReadAll(r.Body)
			got <- err
		}))
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A safety net so that a regression fails instead of hanging; the
	// proxy answers long before.
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(conn, "POST /public/upload HTTP/1.1\r\nHost: app.example\r\nContent-Length: 100\r\n\r\nthe first bytes"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("status %d, want 408", resp.StatusCode)
	}
	if err := <-got; err == nil {
		t.Error("the app read a complete body")
	}
}
