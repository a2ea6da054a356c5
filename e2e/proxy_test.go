package e2e_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gatehouse-dev/gatehouse/e2e/idp"
)

// TestLoginThroughRealIdP: a browser opens a protected page, signs in on
// oidc-provider's own login page, lands back on the page, and the app
// receives the identity headers and a verifiable assertion.
func TestLoginThroughRealIdP(t *testing.T) {
	up := echoUpstream(t)
	addr, metrics := freeAddr(t), freeAddr(t)
	base := "http://" + addr
	provider := idp.Start(t, idp.Options{RedirectURIs: []string{base + "/_gatehouse/callback"}})
	p := startProxy(t, provider, up.URL, addr, metrics,
		"--allowed-email-domains=example.com",
		"--log-level=debug",
	)

	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	resp, err := idp.Login(client, base+"/reports?month=11", idp.DemoUser, idp.DemoPassword)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after login: status %d at %s: %.300s", resp.StatusCode, resp.Request.URL, body)
	}
	if resp.Request.URL.String() != base+"/reports?month=11" {
		t.Errorf("landed on %s, want the page first asked for", resp.Request.URL)
	}
	var echo struct {
		Path   string      `json:"path"`
		Header http.Header `json:"header"`
	}
	if err := json.Unmarshal(body, &echo); err != nil {
		t.Fatalf("not the upstream's echo: %.300s", body)
	}
	for k, want := range map[string]string{
		"X-Auth-Request-User":               "demo",
		"X-Auth-Request-Email":              idp.DemoEmail,
		"X-Auth-Request-Preferred-Username": "demo",
		"X-Auth-Request-Groups":             "demo,developers",
	} {
		if got := echo.Header.Get(k); got != want {
			t.Errorf("upstream %s = %q, want %q", k, got, want)
		}
	}
	// The IdP's own cookies share the host 127.0.0.1 and do reach the app;
	// the proxy's must not.
	fake := &http.Request{Header: http.Header{"Cookie": echo.Header.Values("Cookie")}}
	for _, c := range fake.Cookies() {
		if c.Name == "gatehouse" || strings.HasPrefix(c.Name, "gatehouse-") {
			t.Errorf("Gatehouse cookie %s reached the upstream", c.Name)
		}
	}

	// The app verifies X-Gatehouse-Identity with the proxy's JWKS.
	jwksResp, err := http.Get(base + "/_gatehouse/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(jwksResp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	jwksResp.Body.Close()
	jws, err := jose.ParseSignedCompact(echo.Header.Get("X-Gatehouse-Identity"), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := jws.Verify(set.Keys[0])
	if err != nil {
		t.Fatalf("assertion does not verify against jwks.json: %v", err)
	}
	var claims struct {
		Iss, Aud, Sub string
		Exp, Iat      int64
	}
	_ = json.Unmarshal(payload, &claims)
	if claims.Iss != base || claims.Aud != up.URL || claims.Sub != "demo" || claims.Exp-claims.Iat > 300 {
		t.Errorf("assertion claims %+v", claims)
	}

	// An API call without the session is 401, not a redirect.
	apiResp, err := http.Get(base + "/reports")
	if err != nil {
		t.Fatal(err)
	}
	apiResp.Body.Close()
	if apiResp.StatusCode != http.StatusUnauthorized {
		t.Errorf("API call without session: %d", apiResp.StatusCode)
	}

	// A user outside the allowed domain is refused after signing in.
	jar2, _ := cookiejar.New(nil)
	alice := &http.Client{Jar: jar2, Timeout: 20 * time.Second}
	resp, err = idp.Login(alice, base+"/", idp.AliceUser, idp.AlicePassword)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(page), "allowed-emails") {
		t.Errorf("alice: status %d, %.200s", resp.StatusCode, page)
	}

	// SIGTERM drains and exits cleanly.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("gatehouse exited with %v after SIGTERM", err)
		}
		p.done <- err
	case <-time.After(25 * time.Second):
		t.Fatal("gatehouse did not exit after SIGTERM")
	}
	logs := p.Logs()
	if !strings.Contains(logs, `"msg":"Login succeeded"`) || !strings.Contains(logs, `"msg":"Request denied"`) {
		t.Errorf("auth decisions missing from the logs")
	}
}
