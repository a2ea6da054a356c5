package e2e_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/e2e/idp"
	"github.com/gatehouse-dev/gatehouse/internal/redistest"
)

// TestSessionLifecycleWithRealIdP: with oidc-provider and the Redis store,
// access tokens are refreshed with rotating refresh tokens, logout revokes
// the refresh token and sends the browser through RP-initiated logout, and
// a sign-out at the IdP ends the session through back-channel logout.
func TestSessionLifecycleWithRealIdP(t *testing.T) {
	rs := redistest.Start(t)
	up := echoUpstream(t)
	addr, metrics := freeAddr(t), freeAddr(t)
	base := "http://" + addr
	provider := idp.Start(t, idp.Options{
		RedirectURIs:           []string{base + "/_gatehouse/callback"},
		PostLogoutRedirectURIs: []string{base + "/"},
		BackchannelLogoutURI:   base + "/_gatehouse/backchannel-logout",
		AccessTokenTTL:         4 * time.Second,
	})
	startProxy(t, provider, up.URL, addr, metrics,
		"--session-store=redis",
		"--redis-url="+rs.URL(),
		"--pass-access-token",
		"--logout-redirect=idp",
	)

	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	resp, err := idp.Login(client, base+"/start", idp.DemoUser, idp.DemoPassword)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	authz := func() (string, int) {
		r, err := client.Get(base + "/api")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		body, _ := io.ReadAll(r.Body)
		var e struct {
			Header http.Header `json:"header"`
		}
		_ = json.Unmarshal(body, &e)
		return e.Header.Get("Authorization"), r.StatusCode
	}
	first, status := authz()
	if status != http.StatusOK || !strings.HasPrefix(first, "Bearer ") {
		t.Fatalf("first request: %d %q", status, first)
	}
	// Two refreshes in a row: the second only works if the first stored the
	// rotated refresh token.
	current := first
	for i := range 2 {
		deadline := time.Now().Add(15 * time.Second)
		for {
			got, status := authz()
			if status != http.StatusOK {
				t.Fatalf("refresh %d: request got %d; the session ended", i+1, status)
			}
			if got != current {
				current = got
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("refresh %d: access token not refreshed within 15s", i+1)
			}
			time.Sleep(250 * time.Millisecond) //nolint:forbidigo // polling a real process
		}
	}
	if n := countLines(provider, "grant_type=refresh_token status=200"); n < 2 {
		t.Errorf("IdP served %d refresh grants, want at least 2", n)
	}
	if n := countLines(provider, "grant_type=refresh_token status=400"); n != 0 {
		t.Errorf("IdP refused %d refresh grants", n)
	}

	// Logout: same-origin POST, revocation, RP-initiated logout.
	copied := cookieHeader(jar, base)
	noFollow := *client
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, _ := http.NewRequest(http.MethodPost, base+"/_gatehouse/logout", nil)
	req.Header.Set("Origin", base)
	out, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out.Body.Close()
	loc, _ := url.Parse(out.Header.Get("Location"))
	if out.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc.String(), provider.Issuer) {
		t.Fatalf("logout: %d to %s", out.StatusCode, loc)
	}
	if q := loc.Query(); q.Get("post_logout_redirect_uri") != base+"/" || strings.Count(q.Get("id_token_hint"), ".") != 2 {
		t.Errorf("end-session parameters: %v", q)
	}
	revocations, err := provider.Revocations()
	if err != nil {
		t.Fatal(err)
	}
	if revocations["RefreshToken"] != 1 {
		t.Errorf("revocations %v, want the refresh token revoked once", revocations)
	}
	if status := statusWithCookie(t, base+"/api", copied); status != http.StatusUnauthorized {
		t.Errorf("copied cookie after logout: %d, want 401", status)
	}
	end, err := idp.Logout(client, loc.String())
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(end.Body)
	end.Body.Close()
	// Back at the app with no session: the IdP's login page again.
	if !strings.HasPrefix(end.Request.URL.String(), provider.Issuer) || !strings.Contains(string(page), idp.LoginTitle) {
		t.Errorf("after RP-initiated logout the browser is at %s: %.200s", end.Request.URL, page)
	}

	// Back-channel logout: sign in again, then sign out at the IdP only.
	resp, err = idp.Login(client, base+"/again", idp.DemoUser, idp.DemoPassword)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, status := authz(); status != http.StatusOK {
		t.Fatalf("second login: %d", status)
	}
	bye, err := idp.Logout(client, provider.Issuer+"/session/end")
	if err != nil {
		t.Fatal(err)
	}
	bye.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, status := authz(); status == http.StatusUnauthorized {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session alive 10s after the IdP's back-channel logout; IdP log:\n%s", strings.Join(provider.LogLines(), "\n"))
		}
		time.Sleep(100 * time.Millisecond) //nolint:forbidigo // polling a real process
	}
}

func countLines(p *idp.IdP, substr string) int {
	n := 0
	for _, l := range p.LogLines() {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

func cookieHeader(jar http.CookieJar, base string) string {
	u, _ := url.Parse(base)
	var parts []string
	for _, c := range jar.Cookies(u) {
		if c.Name == "gatehouse" {
			parts = append(parts, c.Name+"="+c.Value)
		}
	}
	return strings.Join(parts, "; ")
}

func statusWithCookie(t *testing.T, rawURL, cookie string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, rawURL, nil)
	req.Header.Set("Cookie", cookie)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
