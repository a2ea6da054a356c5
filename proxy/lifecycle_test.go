package proxy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gatehouse-dev/gatehouse/internal/redistest"
	"github.com/gatehouse-dev/gatehouse/proxy"
	"github.com/gatehouse-dev/gatehouse/proxy/idptest"
)

// testClock is a settable clock for the proxy; the fake IdP keeps real time.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// sessionCookies returns the browser's Gatehouse session cookies as a
// Cookie header value.
func sessionCookies(t *testing.T, b *browser, base string) string {
	t.Helper()
	var parts []string
	for _, c := range b.jar.Cookies(mustURL(t, base)) {
		if c.Name == "gatehouse" || strings.HasPrefix(c.Name, "gatehouse-") && !strings.HasPrefix(c.Name, "gatehouse-login-") {
			parts = append(parts, c.Name+"="+c.Value)
		}
	}
	if len(parts) == 0 {
		t.Fatal("browser has no session cookie")
	}
	return strings.Join(parts, "; ")
}

// raw sends a request with exactly the given Cookie header (no jar).
func raw(t *testing.T, method, rawURL, cookie string, headers ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestRefreshOnceUnderConcurrency(t *testing.T) {
	t.Parallel()
	idp := idptest.New(t)
	idp.SetAccessTokenTTL(2 * time.Minute)
	clock := &testClock{}
	h := newHarness(t, withIdP(idp), withNow(clock.Now), withConfig(func(c *proxy.Config) { c.PassAccessToken = true }))
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	oldCookie := sessionCookies(t, b, h.url)
	before := h.echo(b, "/").Header.Get("Authorization")
	if idp.TokenCalls("refresh_token") != 0 {
		t.Fatal("refreshed before the token was due")
	}
	clock.Advance(100 * time.Second) // 20s left of 120s: under a quarter

	const n = 50
	var wg sync.WaitGroup
	auths := make([]string, n)
	cookies := make([]string, n)
	for i := range n {
		wg.Go(func() {
			resp := raw(t, http.MethodGet, h.url+"/x", oldCookie)
			body, _ := io.ReadAll(resp.Body)
			var e echoed
			_ = json.Unmarshal(body, &e)
			auths[i] = e.Header.Get("Authorization")
			for _, c := range resp.Cookies() {
				if c.Name == "gatehouse" {
					cookies[i] = c.Value
				}
			}
		})
	}
	wg.Wait()
	if got := idp.TokenCalls("refresh_token"); got != 1 {
		t.Fatalf("%d refresh calls for %d concurrent requests, want 1", got, n)
	}
	for i := range n {
		if auths[i] == before || auths[i] == "" {
			t.Errorf("request %d went upstream with the old access token", i)
		}
		if auths[i] != auths[0] {
			t.Errorf("request %d got another access token", i)
		}
		if cookies[i] == "" {
			t.Errorf("request %d did not get the refreshed session cookie", i)
		}
	}
	// The new cookie carries the rotated refresh token: a later refresh
	// works, and the old cookie no longer triggers a second refresh call.
	newCookie := "gatehouse=" + cookies[0]
	clock.Advance(110 * time.Second)
	if resp := raw(t, http.MethodGet, h.url+"/x", newCookie); resp.StatusCode != http.StatusOK {
		t.Fatalf("second refresh: status %d", resp.StatusCode)
	}
	if got := idp.TokenCalls("refresh_token"); got != 2 {
		t.Errorf("%d refresh calls after the second expiry, want 2", got)
	}
}

func TestRefusedRefreshEndsSession(t *testing.T) {
	t.Parallel()
	idp := idptest.New(t)
	idp.SetAccessTokenTTL(2 * time.Minute)
	clock := &testClock{}
	h := newHarness(t, withIdP(idp), withNow(clock.Now))
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	cookie := sessionCookies(t, b, h.url)
	idp.SetRefuseRefresh(true)
	clock.Advance(110 * time.Second)
	api := raw(t, http.MethodGet, h.url+"/x", cookie)
	if api.StatusCode != http.StatusUnauthorized {
		t.Errorf("API call after a refused refresh: %d, want 401", api.StatusCode)
	}
	cleared := false
	for _, c := range api.Cookies() {
		if c.Name == "gatehouse" && c.MaxAge < 0 {
			cleared = true
		}
	}
	if !cleared {
		t.Error("the session cookie was not cleared")
	}
	nav := raw(t, http.MethodGet, h.url+"/x", cookie, "Accept", "text/html")
	if loc := nav.Header.Get("Location"); nav.StatusCode != http.StatusFound || !strings.HasPrefix(loc, idp.URL) {
		t.Errorf("navigation after a refused refresh: %d to %q, want a new login", nav.StatusCode, loc)
	}
}

func TestRefreshDuringIdPOutageKeepsSession(t *testing.T) {
	t.Parallel()
	idp := idptest.New(t)
	idp.SetAccessTokenTTL(2 * time.Minute)
	clock := &testClock{}
	h := newHarness(t, withIdP(idp), withNow(clock.Now))
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	cookie := sessionCookies(t, b, h.url)
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusInternalServerError} {
		idp.SetTokenStatus(status)
		clock.Advance(3 * time.Minute) // expired, and past any retry wait
		calls := idp.TokenCalls("refresh_token")
		for range 3 {
			if resp := raw(t, http.MethodGet, h.url+"/x", cookie); resp.StatusCode != http.StatusOK {
				t.Fatalf("IdP answering %d: request got %d, want the session kept", status, resp.StatusCode)
			}
		}
		if got := idp.TokenCalls("refresh_token") - calls; got != 1 {
			t.Errorf("IdP answering %d: %d refresh attempts for 3 requests, want 1 then a wait", status, got)
		}
	}
	idp.SetTokenStatus(0)
	clock.Advance(time.Minute)
	if resp := raw(t, http.MethodGet, h.url+"/x", cookie); resp.StatusCode != http.StatusOK {
		t.Fatalf("after the outage: %d", resp.StatusCode)
	}
}

// TestRefreshAcrossReplicas: two replicas share Redis; 50 concurrent
// requests spread over both refresh the rotating refresh token once.
func TestRefreshAcrossReplicas(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	idp := idptest.New(t)
	idp.SetAccessTokenTTL(2 * time.Minute)
	clock := &testClock{}
	secretDir := t.TempDir()
	redisCfg := withConfig(func(c *proxy.Config) {
		c.SessionStore = proxy.StoreRedis
		c.RedisURL = rs.URL()
		c.RedirectURLs = []string{"http://app.example/_gatehouse/callback"}
		c.PassAccessToken = true
	})
	a := newHarness(t, withIdP(idp), withNow(clock.Now), withSecret("shared-secret-"+secretDir[:0]+strings.Repeat("z", 30)), redisCfg)
	b := newHarness(t, withIdP(idp), withNow(clock.Now), withSecret("shared-secret-"+strings.Repeat("z", 30)), redisCfg)
	a.waitDiscovered()
	b.waitDiscovered()
	cookie := loginVia(t, a, idp, "ann")
	clock.Advance(100 * time.Second)
	var wg sync.WaitGroup
	codes := make([]int, 50)
	for i := range 50 {
		base := []*harness{a, b}[i%2].url
		wg.Go(func() {
			resp := raw(t, http.MethodGet, base+"/x", cookie, "Host", "app.example")
			codes[i] = resp.StatusCode
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("request %d: status %d", i, c)
		}
	}
	if got := idp.TokenCalls("refresh_token"); got != 1 {
		t.Errorf("%d refresh calls across two replicas, want 1", got)
	}
}

// loginVia logs in through h (whose redirect URL host is app.example, so
// requests send that Host) and returns the session Cookie header.
func loginVia(t *testing.T, h *harness, _ *idptest.Provider, user string) string {
	t.Helper()
	start := raw(t, http.MethodGet, h.url+"/", "", "Accept", "text/html", "Host", "app.example")
	auth := location(t, start)
	var login []string
	for _, c := range start.Cookies() {
		login = append(login, c.Name+"="+c.Value)
	}
	cb := location(t, raw(t, http.MethodGet, auth.String(), "", idptest.UserHeader, user))
	cb.Scheme, cb.Host = "http", strings.TrimPrefix(h.url, "http://")
	done := raw(t, http.MethodGet, cb.String(), strings.Join(login, "; "), "Accept", "text/html", "Host", "app.example")
	location(t, done)
	for _, c := range done.Cookies() {
		if c.Name == "gatehouse" && c.MaxAge > 0 {
			return "gatehouse=" + c.Value
		}
	}
	t.Fatal("no session cookie after login")
	return ""
}

func TestLogout(t *testing.T) {
	t.Parallel()
	for _, store := range []string{proxy.StoreCookie, proxy.StoreRedis} {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			idp := idptest.New(t)
			opts := []harnessOpt{withIdP(idp)}
			if store == proxy.StoreRedis {
				rs := redistest.Start(t)
				opts = append(opts, withConfig(func(c *proxy.Config) { c.SessionStore, c.RedisURL = proxy.StoreRedis, rs.URL() }))
			}
			h := newHarness(t, opts...)
			h.waitDiscovered()
			b := newBrowser(t)
			h.login(b, "/", "ann")
			cookie := sessionCookies(t, b, h.url)

			// A GET only shows the confirmation form.
			get := raw(t, http.MethodGet, h.url+"/_gatehouse/logout", cookie, "Accept", "text/html")
			if body := readBody(t, get); get.StatusCode != http.StatusOK || !strings.Contains(body, `method="post"`) {
				t.Errorf("GET logout: %d %.200s", get.StatusCode, body)
			}
			// Cross-site and header-less POSTs are refused.
			for name, hdrs := range map[string][]string{
				"cross-site origin":    {"Origin", "https://evil.example"},
				"cross-site fetch":     {"Sec-Fetch-Site", "cross-site"},
				"null origin":          {"Origin", "null"},
				"neither header":       nil,
				"same-site not origin": {"Sec-Fetch-Site", "same-site"},
			} {
				if resp := raw(t, http.MethodPost, h.url+"/_gatehouse/logout", cookie, hdrs...); resp.StatusCode != http.StatusForbidden {
					t.Errorf("%s POST: %d, want 403", name, resp.StatusCode)
				}
			}
			if resp := raw(t, http.MethodGet, h.url+"/x", cookie); resp.StatusCode != http.StatusOK {
				t.Fatalf("session gone after refused logouts: %d", resp.StatusCode)
			}
			if len(idp.Revoked()) != 0 {
				t.Fatal("a refused logout revoked tokens")
			}

			post := raw(t, http.MethodPost, h.url+"/_gatehouse/logout", cookie, "Origin", h.url)
			if post.StatusCode != http.StatusSeeOther || post.Header.Get("Location") != "/" {
				t.Fatalf("logout: %d to %q", post.StatusCode, post.Header.Get("Location"))
			}
			cleared := map[string]bool{}
			for _, c := range post.Cookies() {
				if c.MaxAge < 0 {
					cleared[c.Name] = true
				}
			}
			if !cleared["gatehouse"] {
				t.Errorf("session cookie not cleared: %v", post.Header["Set-Cookie"])
			}
			if rev := idp.Revoked(); len(rev) != 1 || strings.Contains(rev[0], ".") {
				t.Errorf("revoked %v, want the refresh token", rev)
			}
			// The copied cookie: dead with Redis, valid with cookies.
			after := raw(t, http.MethodGet, h.url+"/x", cookie)
			want := http.StatusUnauthorized
			if store == proxy.StoreCookie {
				want = http.StatusOK // documented: a copied cookie lives until it expires
			}
			if after.StatusCode != want {
				t.Errorf("copied cookie after logout: %d, want %d", after.StatusCode, want)
			}
		})
	}
}

func TestLogoutAtIdP(t *testing.T) {
	t.Parallel()
	idp := idptest.New(t)
	var idToken string
	idp.SetIDTokenHook(func(c map[string]any) { c["sid"] = "idp-session-1" })
	h := newHarness(t, withIdP(idp), withConfig(func(c *proxy.Config) {
		c.LogoutRedirect = proxy.LogoutIdP
		c.PostLogoutRedirectURL = "https://app.example/signed-out?x=1"
	}))
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	cookie := sessionCookies(t, b, h.url)
	post := raw(t, http.MethodPost, h.url+"/_gatehouse/logout", cookie, "Sec-Fetch-Site", "same-origin")
	loc, err := url.Parse(post.Header.Get("Location"))
	if err != nil || post.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d %v", post.StatusCode, err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != idp.URL+"/logout" {
		t.Errorf("sent to %s, want the end_session_endpoint", got)
	}
	q := loc.Query()
	idToken = q.Get("id_token_hint")
	if strings.Count(idToken, ".") != 2 {
		t.Errorf("id_token_hint %q is not the ID token", idToken)
	}
	if got := q.Get("post_logout_redirect_uri"); got != "https://app.example/signed-out?x=1" {
		t.Errorf("post_logout_redirect_uri %q", got)
	}
}

func TestPageTokens(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	h := newHarness(t, withNow(clock.Now), withConfig(func(c *proxy.Config) { c.TokenAudience = "https://api.example" }))
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	cookie := sessionCookies(t, b, h.url)
	endpoint := h.url + "/_gatehouse/token"
	ok := raw(t, http.MethodGet, endpoint, cookie, "Sec-Fetch-Site", "same-origin", "X-Requested-With", "XMLHttpRequest")
	body := readBody(t, ok)
	if ok.StatusCode != http.StatusOK || ok.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("same-origin token call: %d, Cache-Control %q, %s", ok.StatusCode, ok.Header.Get("Cache-Control"), body)
	}
	var tr struct {
		Token     string `json:"token"`
		ExpiresIn int    `json:"expires_in"`
	}
	if err := json.Unmarshal([]byte(body), &tr); err != nil || tr.ExpiresIn <= 0 || tr.ExpiresIn > 300 {
		t.Fatalf("token response %s", body)
	}
	claims := verifyAssertion(t, h, tr.Token)
	if claims.Audience != "https://api.example" || claims.Subject != "ann" || claims.Expiry-claims.IssuedAt > 300 {
		t.Errorf("page token claims %+v", claims)
	}
	if !time.Unix(claims.Expiry, 0).Before(clock.Now().Add(301 * time.Second)) {
		t.Errorf("page token outlives 5 minutes")
	}
	originOK := raw(t, http.MethodGet, endpoint, cookie, "Origin", h.url, "X-Requested-With", "XMLHttpRequest")
	if originOK.StatusCode != http.StatusOK {
		t.Errorf("matching Origin: %d", originOK.StatusCode)
	}
	for name, hdrs := range map[string][]string{
		"cross-site":              {"Sec-Fetch-Site", "cross-site", "X-Requested-With", "XMLHttpRequest"},
		"foreign origin":          {"Origin", "https://evil.example", "X-Requested-With", "XMLHttpRequest"},
		"missing header":          {"Sec-Fetch-Site", "same-origin"},
		"simple request":          nil,
		"wrong header value":      {"Sec-Fetch-Site", "same-origin", "X-Requested-With", "fetch"},
		"origin beats fetch-site": {"Origin", "https://evil.example", "Sec-Fetch-Site", "same-origin", "X-Requested-With", "XMLHttpRequest"},
	} {
		if resp := raw(t, http.MethodGet, endpoint, cookie, hdrs...); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, resp.StatusCode)
		}
	}
	if resp := raw(t, http.MethodGet, endpoint, "", "Sec-Fetch-Site", "same-origin", "X-Requested-With", "XMLHttpRequest"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no session: %d, want 401", resp.StatusCode)
	}
	// The token expires: five minutes later it is past exp.
	clock.Advance(5*time.Minute + time.Second)
	if !clock.Now().After(time.Unix(claims.Expiry, 0)) {
		t.Error("page token still valid after 5 minutes")
	}
}

func TestCookieSecretRotation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withSecret(strings.Repeat("o", 40)))
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	oldCookie := sessionCookies(t, b, h.url)
	h.write("cookie-secret", strings.Repeat("n", 40)+"\n"+strings.Repeat("o", 40)+"\n")
	var reissued string
	eventually(t, 10*time.Second, func() string {
		resp := raw(t, http.MethodGet, h.url+"/x", oldCookie)
		if resp.StatusCode != http.StatusOK {
			return fmt.Sprintf("old session after rotation: %d", resp.StatusCode)
		}
		for _, c := range resp.Cookies() {
			if c.Name == "gatehouse" && c.MaxAge > 0 {
				reissued = "gatehouse=" + c.Value
				return ""
			}
		}
		return "session not re-issued under the new secret yet"
	})
	// Only the new secret now: the re-issued cookie works, the old one not.
	h.write("cookie-secret", strings.Repeat("n", 40)+"\n")
	eventually(t, 10*time.Second, func() string {
		if resp := raw(t, http.MethodGet, h.url+"/x", oldCookie); resp.StatusCode != http.StatusUnauthorized {
			return "cookie under the dropped secret still accepted"
		}
		return ""
	})
	if resp := raw(t, http.MethodGet, h.url+"/x", reissued); resp.StatusCode != http.StatusOK {
		t.Errorf("re-issued cookie: %d", resp.StatusCode)
	}
	// A short secret line is refused and the current secrets stay.
	h.write("cookie-secret", "short\n")
	eventually(t, 10*time.Second, func() string {
		if !strings.Contains(h.logs.String(), "Cookie secret file rejected") {
			return "bad secret file not reported"
		}
		return ""
	})
	if resp := raw(t, http.MethodGet, h.url+"/x", reissued); resp.StatusCode != http.StatusOK {
		t.Errorf("after a bad secret file: %d", resp.StatusCode)
	}
}

// TestRedisDownGives503: with Redis killed, a request carrying a session
// cookie gets 503 within 5 seconds (never a login loop), and the proxy
// recovers by itself when Redis returns.
func TestRedisDownGives503(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	h := newHarness(t, withConfig(func(c *proxy.Config) { c.SessionStore, c.RedisURL = proxy.StoreRedis, rs.URL() }))
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	cookie := sessionCookies(t, b, h.url)
	rs.Kill()
	for _, nav := range []bool{false, true} {
		start := time.Now()
		var hdr []string
		if nav {
			hdr = []string{"Accept", "text/html"}
		}
		resp := raw(t, http.MethodGet, h.url+"/x", cookie, hdr...)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("navigation=%v with Redis down: %d, want 503", nav, resp.StatusCode)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("503 took %v, want under 5s", d)
		}
	}
	rs.Restart()
	eventually(t, 10*time.Second, func() string {
		// Redis came back empty: the session is gone, so a new login starts.
		if resp := raw(t, http.MethodGet, h.url+"/x", cookie, "Accept", "text/html"); resp.StatusCode != http.StatusFound {
			return fmt.Sprintf("after Redis returned: %d", resp.StatusCode)
		}
		return ""
	})
	if back := h.login(newBrowser(t), "/again", "ann"); back != "/again" {
		t.Errorf("login after recovery went to %q", back)
	}
}

// TestClientSecretRotation: a changed --client-secret-file is used for the
// next code exchange, without a restart.
func TestClientSecretRotation(t *testing.T) {
	t.Parallel()
	idp := idptest.New(t)
	h := newHarness(t, withIdP(idp))
	h.waitDiscovered()
	h.login(newBrowser(t), "/", "ann") // works with the first secret
	idp.SetClientSecret("rotated-secret")
	h.write("client-secret", "rotated-secret\n")
	eventually(t, 10*time.Second, func() string {
		if !strings.Contains(h.logs.String(), "Client secret reloaded") {
			return "client secret not reloaded"
		}
		return ""
	})
	if back := h.login(newBrowser(t), "/after", "ann"); back != "/after" {
		t.Errorf("login with the rotated secret went to %q", back)
	}
}

// TestIdentityKeyFollowsSecretRotation: when the cookie secret file
// changes, assertions are signed with the key of its new first line,
// jwks.json publishes the old key too, and a replica started with the new
// file publishes the same keys (DESIGN.md behaviour 5).
func TestIdentityKeyFollowsSecretRotation(t *testing.T) {
	t.Parallel()
	oldSecret, newSecret := strings.Repeat("o", 40), strings.Repeat("n", 40)
	idp := idptest.New(t)
	h := newHarness(t, withIdP(idp), withSecret(oldSecret))
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	jwks := func(h *harness) []string {
		resp := raw(t, http.MethodGet, h.url+"/_gatehouse/jwks.json", "")
		var set struct {
			Keys []struct {
				Kid string `json:"kid"`
			} `json:"keys"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, k := range set.Keys {
			out = append(out, k.Kid)
		}
		return out
	}
	assertionKid := func() string {
		tok := h.echo(b, "/").Header.Get("X-Gatehouse-Identity")
		jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		return jws.Signatures[0].Header.KeyID
	}
	before := jwks(h)
	if len(before) != 1 || assertionKid() != before[0] {
		t.Fatalf("before rotation: jwks %v, assertion kid %q", before, assertionKid())
	}
	restarted := newHarness(t, withIdP(idp), withSecret(newSecret+"\n"+oldSecret))
	want := jwks(restarted)
	h.write("cookie-secret", newSecret+"\n"+oldSecret+"\n")
	eventually(t, 10*time.Second, func() string {
		if got := jwks(h); !slices.Equal(got, want) {
			return fmt.Sprintf("jwks after rotation %v, a restarted replica publishes %v", got, want)
		}
		return ""
	})
	if kid := assertionKid(); kid != want[0] || kid == before[0] {
		t.Errorf("assertion signed with %q after rotation, want the new key %q", kid, want[0])
	}
	if !slices.Contains(want, before[0]) {
		t.Errorf("jwks %v lacks the old key %q", want, before[0])
	}
}
