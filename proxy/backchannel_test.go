package proxy_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/redistest"
	"github.com/gatehouse-dev/gatehouse/proxy"
	"github.com/gatehouse-dev/gatehouse/proxy/idptest"
)

const logoutEvent = "http://schemas.openid.net/event/backchannel-logout"

// logoutToken signs a back-channel logout token with the IdP's key after
// edit changes its claims.
func logoutToken(t *testing.T, idp *idptest.Provider, edit func(map[string]any)) string {
	t.Helper()
	now := time.Now()
	claims := map[string]any{
		"iss": idp.URL, "aud": idp.ClientID, "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
		"jti": rand.Text(), "events": map[string]any{logoutEvent: map[string]any{}}, "sid": "idp-sid-ann",
	}
	if edit != nil {
		edit(claims)
	}
	raw, _ := json.Marshal(claims)
	return signRS256(t, idp.Key, idp.KeyID, raw)
}

func postLogoutToken(t *testing.T, base, token string) *http.Response {
	t.Helper()
	resp, err := http.PostForm(base+"/_gatehouse/backchannel-logout", url.Values{"logout_token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// TestBackchannelLogoutAcrossReplicas: a valid logout token posted to one
// replica ends the sessions of its sid on both replicas sharing Redis, and
// leaves other sessions alone.
func TestBackchannelLogoutAcrossReplicas(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	idp := idptest.New(t)
	idp.AddUser(idptest.User{Subject: "bob", Email: "bob@example.com"})
	idp.SetIDTokenHook(func(c map[string]any) { c["sid"] = "idp-sid-" + c["sub"].(string) })
	cfg := withConfig(func(c *proxy.Config) {
		c.SessionStore, c.RedisURL = proxy.StoreRedis, rs.URL()
		c.RedirectURLs = []string{"http://app.example/_gatehouse/callback"}
	})
	secret := withSecret(strings.Repeat("r", 40))
	a := newHarness(t, withIdP(idp), cfg, secret)
	b := newHarness(t, withIdP(idp), cfg, secret)
	a.waitDiscovered()
	b.waitDiscovered()
	annOnA := loginVia(t, a, idp, "ann")
	annOnB := loginVia(t, b, idp, "ann")
	bob := loginVia(t, a, idp, "bob")
	status := func(h *harness, cookie string) int {
		return raw(t, http.MethodGet, h.url+"/x", cookie, "Host", "app.example").StatusCode
	}
	for _, h := range []*harness{a, b} {
		if s := status(h, annOnA); s != http.StatusOK {
			t.Fatalf("before logout: %d", s)
		}
	}

	// Rejected tokens change nothing.
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{
		"bad signature":  signRS256(t, otherKey, idp.KeyID, mustMarshal(map[string]any{"iss": idp.URL, "aud": idp.ClientID, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix(), "jti": "x", "sid": "idp-sid-ann", "events": map[string]any{logoutEvent: map[string]any{}}})),
		"wrong aud":      logoutToken(t, idp, func(c map[string]any) { c["aud"] = "someone-else" }),
		"wrong iss":      logoutToken(t, idp, func(c map[string]any) { c["iss"] = "https://evil.example" }),
		"missing events": logoutToken(t, idp, func(c map[string]any) { delete(c, "events") }),
		"nonce present":  logoutToken(t, idp, func(c map[string]any) { c["nonce"] = "n" }),
		"no sid or sub":  logoutToken(t, idp, func(c map[string]any) { delete(c, "sid") }),
		"no jti":         logoutToken(t, idp, func(c map[string]any) { delete(c, "jti") }),
		"expired":        logoutToken(t, idp, func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() }),
		"not a JWT":      "garbage",
	}
	for name, tok := range bad {
		if resp := postLogoutToken(t, a.url, tok); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", name, resp.StatusCode)
		}
	}
	if resp, err := http.PostForm(a.url+"/_gatehouse/backchannel-logout", url.Values{}); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("no logout_token: %v %v", resp, err)
	}
	if s := status(b, annOnB); s != http.StatusOK {
		t.Fatalf("a rejected logout token ended a session: %d", s)
	}

	valid := logoutToken(t, idp, nil)
	if resp := postLogoutToken(t, a.url, valid); resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("valid logout token: %d", resp.StatusCode)
	}
	for name, c := range map[string]struct {
		h      *harness
		cookie string
	}{"ann's session from a, on b": {b, annOnA}, "ann's session from b, on a": {a, annOnB}, "ann on b": {b, annOnB}} {
		if s := status(c.h, c.cookie); s != http.StatusUnauthorized {
			t.Errorf("%s after back-channel logout: %d, want 401", name, s)
		}
	}
	if s := status(b, bob); s != http.StatusOK {
		t.Errorf("bob's session ended with ann's: %d", s)
	}
	// The same token again, on either replica: refused as a replay.
	for _, h := range []*harness{a, b} {
		if resp := postLogoutToken(t, h.url, valid); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("replayed jti: %d, want 400", resp.StatusCode)
		}
	}
	// sub alone ends every session of the user.
	if resp := postLogoutToken(t, b.url, logoutToken(t, idp, func(c map[string]any) { delete(c, "sid"); c["sub"] = "bob" })); resp.StatusCode != http.StatusOK {
		t.Fatalf("logout by sub: %d", resp.StatusCode)
	}
	if s := status(a, bob); s != http.StatusUnauthorized {
		t.Errorf("bob after logout by sub: %d", s)
	}
}

// TestBackchannelLogoutCookieStore: with cookies the revocation is kept in
// memory on the replica that received it.
func TestBackchannelLogoutCookieStore(t *testing.T) {
	t.Parallel()
	idp := idptest.New(t)
	idp.SetIDTokenHook(func(c map[string]any) { c["sid"] = "idp-sid-ann" })
	h := newHarness(t, withIdP(idp))
	h.waitDiscovered()
	b := newBrowser(t)
	h.login(b, "/", "ann")
	cookie := sessionCookies(t, b, h.url)
	if resp := postLogoutToken(t, h.url, logoutToken(t, idp, nil)); resp.StatusCode != http.StatusOK {
		t.Fatalf("logout token: %d", resp.StatusCode)
	}
	if s := raw(t, http.MethodGet, h.url+"/x", cookie).StatusCode; s != http.StatusUnauthorized {
		t.Errorf("session after back-channel logout: %d, want 401", s)
	}
	// A login after the logout is a new session and works.
	b2 := newBrowser(t)
	h.login(b2, "/", "ann")
	if e := h.echo(b2, "/"); e.Header.Get("X-Auth-Request-User") != "ann" {
		t.Errorf("new session after logout: %v", e.Header)
	}
}

func mustMarshal(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// TestKeySetRefetchRateLimited: forged logout tokens and ID tokens (an
// unknown key id, a failed signature) make the proxy fetch the IdP's JWKS
// at most once per 30 seconds, however many arrive (DESIGN.md behaviour 11).
func TestKeySetRefetchRateLimited(t *testing.T) {
	t.Parallel()
	idp := idptest.New(t)
	clock := &testClock{}
	h := newHarness(t, withIdP(idp), withNow(clock.Now))
	h.waitDiscovered()
	h.login(newBrowser(t), "/", "ann")
	if n := idp.KeyFetches(); n != 1 {
		t.Fatalf("%d JWKS fetches after a login, want 1", n)
	}
	forger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	forged := func(kid string) string {
		now := time.Now()
		raw, _ := json.Marshal(map[string]any{
			"iss": idp.URL, "aud": idp.ClientID, "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
			"jti": rand.Text(), "events": map[string]any{logoutEvent: map[string]any{}}, "sid": "idp-sid-ann",
		})
		return signRS256(t, forger, kid, raw)
	}
	for i := range 20 {
		kid := "unknown-" + rand.Text()
		if i%2 == 1 {
			kid = idp.KeyID // a known key id, a failed signature
		}
		if s := postLogoutToken(t, h.url, forged(kid)).StatusCode; s != http.StatusBadRequest {
			t.Fatalf("forged logout token: %d, want 400", s)
		}
	}
	idp.SetSignHook(func(claims []byte) string { return signRS256(t, forger, "unknown-kid", claims) })
	b := newBrowser(t)
	expectRejectedCallback(t, b.get(h.loginSteps(b, "/", "ann").String()), http.StatusForbidden)
	if n := idp.KeyFetches(); n != 1 {
		t.Errorf("%d JWKS fetches after forged tokens within 30s, want 1", n)
	}
	clock.Advance(31 * time.Second)
	for range 5 {
		postLogoutToken(t, h.url, forged("unknown-kid"))
	}
	if n := idp.KeyFetches(); n != 2 {
		t.Errorf("%d JWKS fetches after 30s more of forged tokens, want 2", n)
	}
	// The keys go-oidc holds still verify the IdP's own tokens.
	idp.SetSignHook(nil)
	if s := postLogoutToken(t, h.url, logoutToken(t, idp, nil)).StatusCode; s != http.StatusOK {
		t.Errorf("genuine logout token: %d, want 200", s)
	}
}
