package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
	"github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/rest"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

const audience = controllers.DefaultBrokerAudience

// providersFor renders a providers file: main serves only a, shared serves
// a and b, copied keeps the copy mode.
func providersFor(a, b string) string {
	return fmt.Sprintf(`
providers:
  - name: main
    issuerURL: ISSUER
    clientID: gatehouse-test
    clientSecretRef: {name: %[3]s, key: client-secret}
    clientSecretMode: broker
    allowedNamespaces: [%[1]s]
  - name: shared
    issuerURL: ISSUER
    clientID: gatehouse-test
    clientSecretRef: {name: %[3]s, key: client-secret}
    clientSecretMode: broker
    allowedNamespaces: [%[1]s, %[2]s]
  - name: copied
    issuerURL: ISSUER
    clientID: gatehouse-test
    clientSecretRef: {name: %[3]s, key: client-secret}
    allowedNamespaces: ["*"]
`, a, b, clientSecretName)
}

func redirects(r controllers.BrokerRedirects) string { return r.String() }

func callbackOf(host string) string { return "https://" + host + "/_gatehouse/callback" }

func exchangeForm(code, redirectURI, verifier string) url.Values {
	return url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI},
		"code_verifier": {verifier}, "client_id": {"gatehouse-test"},
	}
}

func keys(v url.Values) []string {
	var out []string
	for k := range v {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// expectRelayed checks that got is the IdP's last answer at path, as the
// IdP gave it, with Cache-Control: no-store.
func expectRelayed(t *testing.T, w *world, got response, path string) idpCall {
	t.Helper()
	c := w.rec.log.last(t, path)
	if got.status != c.status || got.header.Get("Content-Type") != c.contentType || string(got.body) != string(c.body) {
		t.Errorf("broker answered %d %q %q; the IdP answered %d %q %q", got.status, got.header.Get("Content-Type"), got.body, c.status, c.contentType, c.body)
	}
	if cc := got.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	return c
}

func TestExchangeRefreshRevoke(t *testing.T) {
	t.Parallel()
	a := newTenant(t, "tenant-a")
	cbA := callbackOf("a.example.com")
	w := startBroker(t, brokerOptions{
		providers: providersFor(a.ns, "nobody"),
		registry:  map[string]string{a.ns: redirects(controllers.BrokerRedirects{"main": {cbA}})},
	})
	tok := a.token(t, audience)
	code, verifier := w.code(cbA)

	// The sidecar's form, with things a sidecar must not be able to pass
	// on: its own client_secret and an extra parameter.
	form := exchangeForm(code, cbA, verifier)
	form.Set("client_secret", "not-the-broker-s")
	form.Set("resource", "https://elsewhere.example.com")
	got := w.post("main", "token", tok, form)
	if got.status != http.StatusOK {
		t.Fatalf("exchange: %d %s", got.status, got.body)
	}
	sent := expectRelayed(t, w, got, "/token")
	if !sent.basic || sent.user != w.idp.ClientID || sent.pass != w.idp.ClientSecret {
		t.Errorf("IdP got Basic %v %q:%q, want the client's id and secret (client_secret_basic)", sent.basic, sent.user, sent.pass)
	}
	want := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cbA}, "code_verifier": {verifier}}
	if diff := cmp.Diff(want, sent.form); diff != "" {
		t.Errorf("the IdP's form (-want +got):\n%s", diff)
	}
	refresh, _ := got.json["refresh_token"].(string)
	if refresh == "" || got.json["id_token"] == nil {
		t.Fatalf("exchange answer lacks tokens: %s", got.body)
	}

	// A wrong verifier: the IdP's refusal reaches the sidecar unchanged.
	got = w.post("main", "token", tok, exchangeForm(code, cbA, strings.Repeat("x", 43)))
	expectRelayed(t, w, got, "/token")
	if got.status != http.StatusBadRequest || got.json["error"] != "invalid_grant" {
		t.Errorf("exchange with a wrong verifier: %d %s, want the IdP's 400 invalid_grant", got.status, got.body)
	}

	got = w.post("main", "token", tok, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "scope": {"openid email"}, "client_id": {"gatehouse-test"}})
	if got.status != http.StatusOK {
		t.Fatalf("refresh: %d %s", got.status, got.body)
	}
	sent = expectRelayed(t, w, got, "/token")
	if diff := cmp.Diff([]string{"grant_type", "refresh_token", "scope"}, keys(sent.form)); diff != "" || sent.pass != w.idp.ClientSecret {
		t.Errorf("refresh sent %v with secret %q (-want +got keys):\n%s", sent.form, sent.pass, diff)
	}
	if n := w.idp.TokenCalls("refresh_token"); n != 1 {
		t.Errorf("IdP refresh calls = %d, want 1", n)
	}
	rotated, _ := got.json["refresh_token"].(string)

	got = w.post("main", "revoke", tok, url.Values{"token": {rotated}, "token_type_hint": {"refresh_token"}, "client_id": {"gatehouse-test"}})
	if got.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", got.status, got.body)
	}
	sent = expectRelayed(t, w, got, "/revoke")
	if diff := cmp.Diff([]string{"token", "token_type_hint"}, keys(sent.form)); diff != "" || !sent.basic {
		t.Errorf("revoke sent %v, Basic %v (-want +got keys):\n%s", sent.form, sent.basic, diff)
	}
	if !slices.Contains(w.idp.Revoked(), rotated) {
		t.Errorf("the IdP did not revoke the refresh token")
	}

	// One line per request, with the caller; nothing secret.
	logs := w.log.String()
	for _, want := range []string{`"pod":"` + a.pod.Name + `"`, `"namespace":"` + a.ns + `"`, `"serviceAccount":"app"`, `"operation":"exchange"`, `"operation":"refresh"`, `"operation":"revoke"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
	for name, secret := range map[string]string{"bearer token": tok, "code": code, "verifier": verifier, "client secret": w.idp.ClientSecret, "refresh token": refresh, "rotated refresh token": rotated} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain the %s", name)
		}
	}

	m := w.srv.metrics
	if n := testutil.ToFloat64(m.requests.WithLabelValues(a.ns, "main", OpExchange, "200")); n != 1 {
		t.Errorf("requests_total{exchange,200} = %v, want 1", n)
	}
	if n := testutil.ToFloat64(m.reviews.WithLabelValues(reviewAuthenticated)); n != 1 {
		t.Errorf("token_reviews_total{authenticated} = %v, want 1: the token's review is reused", n)
	}
	if n := testutil.ToFloat64(m.reviews.WithLabelValues(reviewCached)); n != 3 {
		t.Errorf("token_reviews_total{cached} = %v, want 3", n)
	}
	resp, err := http.Get(w.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{"gatehouse_broker_requests_total", "gatehouse_broker_request_duration_seconds_bucket", "gatehouse_broker_token_reviews_total"} {
		if !strings.Contains(string(b), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	a, b := newTenant(t, "tenant-a"), newTenant(t, "tenant-b")
	cbA, cbB, evil := callbackOf("a.example.com"), callbackOf("b.example.com"), callbackOf("evil.example.com")
	w := startBroker(t, brokerOptions{
		providers: providersFor(a.ns, b.ns),
		registry: map[string]string{
			a.ns: redirects(controllers.BrokerRedirects{"main": {cbA}, "shared": {cbA}}),
			b.ns: redirects(controllers.BrokerRedirects{"shared": {cbB}}),
		},
	})
	tokA, tokB := a.token(t, audience), b.token(t, audience)
	now := time.Now()
	// Codes the IdP really issued for each callback: only the broker can
	// refuse their exchange.
	codeA, verA := w.code(cbA)
	codeB, verB := w.code(cbB)
	codeEvil, verEvil := w.code(evil)

	tests := []struct {
		name           string
		provider       string
		endpoint       string
		bearer         string
		form           url.Values
		status         int
		errCode        string
		authentication string // the WWW-Authenticate header a 401 must carry
	}{
		// Controls: the same shapes are accepted, so each refusal below is
		// the one rule it names.
		{name: "control: A with its callback", provider: "main", endpoint: "token", bearer: tokA, form: exchangeForm(codeA, cbA, verA), status: 200},
		{name: "control: B with its callback on a shared provider", provider: "shared", endpoint: "token", bearer: tokB, form: exchangeForm(codeB, cbB, verB), status: 200},
		{name: "control: a hand-signed token that has not expired", provider: "main", endpoint: "token", bearer: a.signedToken(t, audience, now.Add(5*time.Minute)), form: exchangeForm(codeA, cbA, verA), status: 200},

		{name: "provider does not serve B", provider: "main", endpoint: "token", bearer: tokB, form: exchangeForm(codeA, cbA, verA), status: 403, errCode: "unauthorized_client"},
		{name: "B with A's callback on a shared provider", provider: "shared", endpoint: "token", bearer: tokB, form: exchangeForm(codeA, cbA, verA), status: 403, errCode: "unauthorized_client"},
		{name: "unregistered callback", provider: "main", endpoint: "token", bearer: tokA, form: exchangeForm(codeEvil, evil, verEvil), status: 403, errCode: "unauthorized_client"},
		{name: "provider in copy mode", provider: "copied", endpoint: "token", bearer: tokA, form: exchangeForm(codeA, cbA, verA), status: 403, errCode: "unauthorized_client"},
		{name: "unknown provider", provider: "nope", endpoint: "token", bearer: tokA, form: exchangeForm(codeA, cbA, verA), status: 403, errCode: "unauthorized_client"},
		{name: "foreign client_id", provider: "main", endpoint: "token", bearer: tokA, form: func() url.Values {
			f := exchangeForm(codeA, cbA, verA)
			f.Set("client_id", "someone-else")
			return f
		}(), status: 403, errCode: "unauthorized_client"},
		{name: "refresh for a namespace the provider does not serve", provider: "main", endpoint: "token", bearer: tokB, form: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"rt"}}, status: 403, errCode: "unauthorized_client"},
		{name: "revoke for a namespace the provider does not serve", provider: "main", endpoint: "revoke", bearer: tokB, form: url.Values{"token": {"rt"}}, status: 403, errCode: "unauthorized_client"},

		// RFC 6750 3.1: the broker refuses the bearer token, not the
		// client; only a request with a token gets the error attribute.
		{name: "no bearer", provider: "main", endpoint: "token", form: exchangeForm(codeA, cbA, verA), status: 401, errCode: "invalid_token", authentication: "Bearer"},
		{name: "wrong audience", provider: "main", endpoint: "token", bearer: a.token(t, "another-audience"), form: exchangeForm(codeA, cbA, verA), status: 401, errCode: "invalid_token", authentication: `Bearer error="invalid_token"`},
		{name: "expired", provider: "main", endpoint: "token", bearer: a.signedToken(t, audience, now.Add(-time.Hour)), form: exchangeForm(codeA, cbA, verA), status: 401, errCode: "invalid_token", authentication: `Bearer error="invalid_token"`},
		{name: "not a Kubernetes token", provider: "main", endpoint: "token", bearer: "garbage", form: exchangeForm(codeA, cbA, verA), status: 401, errCode: "invalid_token", authentication: `Bearer error="invalid_token"`},
		{name: "a person's token", provider: "main", endpoint: "token", bearer: staticToken, form: exchangeForm(codeA, cbA, verA), status: 401, errCode: "invalid_token", authentication: `Bearer error="invalid_token"`},
		{name: "a forged token with the right claims", provider: "main", endpoint: "token", bearer: signJWT(t, jwt.Claims{
			Issuer: saIssuer, Subject: "system:serviceaccount:" + a.ns + ":app", Audience: jwt.Audience{audience},
			IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(10 * time.Minute)),
		}), form: exchangeForm(codeA, cbA, verA), status: 401, errCode: "invalid_token", authentication: `Bearer error="invalid_token"`},
		{name: "a token not bound to a Pod", provider: "main", endpoint: "token", bearer: a.requestToken(t, audience, 600, false), form: exchangeForm(codeA, cbA, verA), status: 401, errCode: "invalid_token", authentication: `Bearer error="invalid_token"`},
		{name: "a Pod's token that lives two hours", provider: "main", endpoint: "token", bearer: a.requestToken(t, audience, 7200, true), form: exchangeForm(codeA, cbA, verA), status: 401, errCode: "invalid_token", authentication: `Bearer error="invalid_token"`},

		{name: "client_credentials", provider: "main", endpoint: "token", bearer: tokA, form: url.Values{"grant_type": {"client_credentials"}}, status: 400, errCode: "unsupported_grant_type"},
		{name: "password grant", provider: "main", endpoint: "token", bearer: tokA, form: url.Values{"grant_type": {"password"}, "username": {"u"}, "password": {"p"}}, status: 400, errCode: "unsupported_grant_type"},
		{name: "no verifier", provider: "main", endpoint: "token", bearer: tokA, form: func() url.Values {
			f := exchangeForm(codeA, cbA, verA)
			f.Del("code_verifier")
			return f
		}(), status: 400, errCode: "invalid_request"},
		{name: "repeated redirect_uri", provider: "main", endpoint: "token", bearer: tokA, form: func() url.Values {
			f := exchangeForm(codeA, cbA, verA)
			f.Add("redirect_uri", evil)
			return f
		}(), status: 400, errCode: "invalid_request"},
		{name: "revoke without token", provider: "main", endpoint: "revoke", bearer: tokA, form: url.Values{"token_type_hint": {"refresh_token"}}, status: 400, errCode: "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := w.idp.TokenCalls("authorization_code") + w.idp.TokenCalls("refresh_token")
			logged := strings.Count(w.log.String(), `"msg":"Broker request"`)
			got := w.post(tc.provider, tc.endpoint, tc.bearer, tc.form)
			if got.status != tc.status {
				t.Fatalf("%d %s, want %d", got.status, got.body, tc.status)
			}
			// Every answer, refusals above all, is one log line with its
			// status.
			last := ""
			for _, l := range strings.Split(w.log.String(), "\n") {
				if strings.Contains(l, `"msg":"Broker request"`) {
					last = l
				}
			}
			if n := strings.Count(w.log.String(), `"msg":"Broker request"`); n != logged+1 || !strings.Contains(last, fmt.Sprintf(`"status":%d`, tc.status)) {
				t.Errorf("%d new Broker request lines, the last %q; want one with status %d", n-logged, last, tc.status)
			}
			if tc.status == 200 {
				return
			}
			if got.json["error"] != tc.errCode || got.json["error_description"] == "" || got.header.Get("Content-Type") != "application/json" {
				t.Errorf("body %s (%s), want error %q with a description", got.body, got.header.Get("Content-Type"), tc.errCode)
			}
			if a := got.header.Get("WWW-Authenticate"); a != tc.authentication {
				t.Errorf("WWW-Authenticate %q, want %q", a, tc.authentication)
			}
			if after := w.idp.TokenCalls("authorization_code") + w.idp.TokenCalls("refresh_token"); after != before {
				t.Errorf("a refused request reached the IdP")
			}
		})
	}

	t.Run("not a broker request", func(t *testing.T) {
		for _, tc := range []struct {
			method, path, contentType, body string
			status                          int
		}{
			{http.MethodGet, "/v1/providers/main/token", "", "", http.StatusMethodNotAllowed},
			{http.MethodPost, "/v1/providers/main/introspect", "application/x-www-form-urlencoded", "token=x", http.StatusNotFound},
			{http.MethodPost, "/", "", "", http.StatusNotFound},
			{http.MethodPost, "/v1/providers/main/token", "application/json", `{"grant_type":"refresh_token"}`, http.StatusBadRequest},
			{http.MethodPost, "/v1/providers/main/token", "application/x-www-form-urlencoded", "grant_type=refresh_token&refresh_token=" + strings.Repeat("x", maxBody), http.StatusRequestEntityTooLarge},
		} {
			got := w.do(tc.method, tc.path, tokA, tc.contentType, tc.body)
			if got.status != tc.status || got.header.Get("Content-Type") != "application/json" || got.json["error"] == nil {
				t.Errorf("%s %s: %d %q %s, want %d with a JSON error", tc.method, tc.path, got.status, got.header.Get("Content-Type"), got.body, tc.status)
			}
		}
	})
}

// TestNoReviewForWhatIsNoServiceAccountToken gives the broker the API
// server's own audience, which a person's static token is good for: the
// API server would authenticate it, yet the broker refuses it without a
// TokenReview, as it is not a JWT. (TestAuthenticate refuses a JWT that a
// TokenReview authenticates for someone other than a ServiceAccount.)
func TestNoReviewForWhatIsNoServiceAccountToken(t *testing.T) {
	t.Parallel()
	a := newTenant(t, "tenant-a")
	w := startBroker(t, brokerOptions{providers: providersFor(a.ns, "nobody"), audience: saIssuer})
	refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"rt"}}
	if got := w.post("main", "token", a.token(t, saIssuer), refresh); got.status != http.StatusBadRequest || got.json["error"] != "invalid_grant" {
		t.Fatalf("control, a ServiceAccount's token: %d %s, want the IdP's invalid_grant", got.status, got.body)
	}
	for range 3 {
		got := w.post("main", "token", staticToken, refresh)
		if got.status != http.StatusUnauthorized || got.json["error"] != "invalid_token" {
			t.Errorf("a person's token: %d %s, want 401 invalid_token", got.status, got.body)
		}
	}
	m := w.srv.metrics.reviews
	if n := testutil.ToFloat64(m.WithLabelValues(reviewMalformed)); n != 3 {
		t.Errorf("token_reviews_total{malformed} = %v, want 3", n)
	}
	if n := testutil.ToFloat64(m.WithLabelValues(reviewAuthenticated)) + testutil.ToFloat64(m.WithLabelValues(reviewRefused)); n != 1 {
		t.Errorf("%v TokenReviews, want 1, the control's", n)
	}
	if !strings.Contains(w.log.String(), "not a ServiceAccount token for the broker") {
		t.Errorf("the log does not say why:\n%s", w.log.String())
	}
}

// TestReviewCachedUntilExp proves, with the broker's clock, that a
// reviewed token is trusted without a new TokenReview until its exp, and
// at most 10 minutes.
func TestReviewCachedUntilExp(t *testing.T) {
	t.Parallel()
	a := newTenant(t, "tenant-a")
	w := startBroker(t, brokerOptions{providers: providersFor(a.ns, "nobody")})
	refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"rt"}}
	reviews := func() (authenticated, cached float64) {
		m := w.srv.metrics.reviews
		return testutil.ToFloat64(m.WithLabelValues(reviewAuthenticated)), testutil.ToFloat64(m.WithLabelValues(reviewCached))
	}
	call := func(tok string, at time.Time) {
		t.Helper()
		w.clock.Set(at)
		if got := w.post("main", "token", tok, refresh); got.status != http.StatusBadRequest {
			t.Fatalf("%d %s, want the IdP's 400", got.status, got.body)
		}
	}
	start := time.Now()

	// The kubelet's token: 600 s.
	tok := a.token(t, audience)
	parsed, err := jwt.ParseSigned(tok, tokenAlgorithms)
	if err != nil {
		t.Fatal(err)
	}
	var claims jwt.Claims
	if err := parsed.UnsafeClaimsWithoutVerification(&claims); err != nil {
		t.Fatal(err)
	}
	exp := claims.Expiry.Time()
	call(tok, start)
	call(tok, exp.Add(-time.Second))
	if auth, cached := reviews(); auth != 1 || cached != 1 {
		t.Fatalf("before exp: %v reviews, %v cached; want 1, 1", auth, cached)
	}
	// At exp the cached review is gone, and the token is refused as
	// expired before any TokenReview.
	w.clock.Set(exp)
	if got := w.post("main", "token", tok, refresh); got.status != http.StatusUnauthorized || got.json["error"] != "invalid_token" {
		t.Fatalf("at exp: %d %s, want 401 invalid_token", got.status, got.body)
	}
	if auth, cached := reviews(); auth != 1 || cached != 1 {
		t.Fatalf("at exp: %v reviews, %v cached; want no new review", auth, cached)
	}

	// A token good for half an hour is reviewed again after 10 minutes.
	long := a.signedToken(t, audience, start.Add(30*time.Minute))
	call(long, start)
	call(long, start.Add(maxCacheAge-time.Second))
	call(long, start.Add(maxCacheAge))
	if auth, cached := reviews(); auth != 3 || cached != 2 {
		t.Fatalf("a longer-lived token: %v reviews, %v cached; want 3, 2", auth, cached)
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	a := newTenant(t, "tenant-a")
	cbA, cbNew := callbackOf("a.example.com"), callbackOf("new.example.com")
	w := startBroker(t, brokerOptions{
		providers: providersFor(a.ns, "nobody"),
		registry:  map[string]string{a.ns: redirects(controllers.BrokerRedirects{"main": {cbA}})},
	})
	tok := a.token(t, audience)
	g := gomega.NewWithT(t)

	t.Run("client secret", func(t *testing.T) {
		code, verifier := w.code(cbA)
		w.idp.SetClientSecret("rotated-secret")
		// The broker still sends the Secret's old value: the IdP refuses.
		if got := w.post("main", "token", tok, exchangeForm(code, cbA, verifier)); got.status != http.StatusUnauthorized || got.json["error"] != "invalid_client" {
			t.Fatalf("before the Secret changed: %d %s, want the IdP's invalid_client", got.status, got.body)
		}
		w.setClientSecret("rotated-secret")
		g.Eventually(func() int {
			return w.post("main", "token", tok, exchangeForm(code, cbA, verifier)).status
		}).WithTimeout(10 * time.Second).Should(gomega.Equal(http.StatusOK))
		if sent := w.rec.log.last(t, "/token"); sent.pass != "rotated-secret" {
			t.Errorf("the IdP got secret %q", sent.pass)
		}
	})

	t.Run("registry", func(t *testing.T) {
		code, verifier := w.code(cbNew)
		if got := w.post("main", "token", tok, exchangeForm(code, cbNew, verifier)); got.status != http.StatusForbidden {
			t.Fatalf("unregistered: %d %s, want 403", got.status, got.body)
		}
		w.setRegistry(map[string]string{a.ns: redirects(controllers.BrokerRedirects{"main": {cbA, cbNew}})})
		g.Eventually(func() int {
			return w.post("main", "token", tok, exchangeForm(code, cbNew, verifier)).status
		}).WithTimeout(10 * time.Second).Should(gomega.Equal(http.StatusOK))
		w.setRegistry(map[string]string{a.ns: redirects(controllers.BrokerRedirects{"main": {cbA}})})
		g.Eventually(func() int {
			return w.post("main", "token", tok, exchangeForm(code, cbNew, verifier)).status
		}).WithTimeout(10 * time.Second).Should(gomega.Equal(http.StatusForbidden))
		w.setRegistry(map[string]string{a.ns: "not json"})
		g.Eventually(func() int {
			return w.post("main", "token", tok, exchangeForm(code, cbA, verifier)).status
		}).WithTimeout(10 * time.Second).Should(gomega.Equal(http.StatusForbidden))
	})
}

func TestIdPOutage(t *testing.T) {
	t.Parallel()
	a := newTenant(t, "tenant-a")
	cbA := callbackOf("a.example.com")
	w := startBroker(t, brokerOptions{
		providers: providersFor(a.ns, "nobody"),
		registry:  map[string]string{a.ns: redirects(controllers.BrokerRedirects{"main": {cbA}})},
	})
	tok := a.token(t, audience)
	code, verifier := w.code(cbA)
	unavailable := func(t *testing.T, got response) {
		t.Helper()
		if got.status != http.StatusServiceUnavailable || got.json["error"] != "temporarily_unavailable" {
			t.Errorf("%d %s, want 503 temporarily_unavailable", got.status, got.body)
		}
	}
	ready := func(t *testing.T) {
		t.Helper()
		resp, err := http.Get(w.health + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("/readyz %d while the IdP is down; readiness must not depend on the IdP", resp.StatusCode)
		}
	}
	start := time.Now()

	// Down before the first discovery.
	w.rec.down.Store(true)
	unavailable(t, w.post("main", "token", tok, exchangeForm(code, cbA, verifier)))
	ready(t)
	w.rec.down.Store(false)
	// Back, but the retry waits for the backoff: no request storm.
	calls := w.rec.log.count()
	unavailable(t, w.post("main", "token", tok, exchangeForm(code, cbA, verifier)))
	if w.rec.log.count() != calls {
		t.Errorf("discovery retried before its backoff")
	}
	w.clock.Set(start.Add(retryFloor))
	if got := w.post("main", "token", tok, exchangeForm(code, cbA, verifier)); got.status != http.StatusOK {
		t.Fatalf("after the backoff: %d %s", got.status, got.body)
	}

	// Down after discovery.
	w.rec.down.Store(true)
	unavailable(t, w.post("main", "token", tok, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"rt"}}))
	unavailable(t, w.post("main", "revoke", tok, url.Values{"token": {"rt"}}))
	ready(t)
	w.rec.down.Store(false)
}

func TestIdPTimeout(t *testing.T) {
	t.Parallel()
	a := newTenant(t, "tenant-a")
	w := startBroker(t, brokerOptions{providers: providersFor(a.ns, "nobody"), idpTimeout: 500 * time.Millisecond})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // before the IdP's own cleanup
	w.idp.SetTokenDelay(func() { <-release })
	got := w.post("main", "token", a.token(t, audience), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"rt"}})
	if got.status != http.StatusServiceUnavailable || got.json["error"] != "temporarily_unavailable" {
		t.Errorf("a token endpoint that does not answer: %d %s, want 503 temporarily_unavailable", got.status, got.body)
	}
}

func TestServingCertificateReloaded(t *testing.T) {
	t.Parallel()
	w := startBroker(t, brokerOptions{providers: providersFor("nobody", "nobody")})
	pool := writeServingCert(t, w.certDir)
	addr := strings.TrimPrefix(w.url, "https://")
	g := gomega.NewWithT(t)
	g.Eventually(func() error {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
		if err == nil {
			conn.Close()
		}
		return err
	}).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(gomega.Succeed())
}

func TestNewConfigErrors(t *testing.T) {
	t.Parallel()
	if brokerREST == nil {
		t.Skip("no control plane: the suite runs one only when not fuzzing")
	}
	c := DefaultConfig()
	c.ConfigFile, c.Namespace, c.TLSCertDir = "/nonexistent/providers.yaml", "gatehouse-system", t.TempDir()
	_, err := New(c, Deps{RESTConfig: brokerREST})
	if !errors.Is(err, ErrConfig) || !strings.HasPrefix(err.Error(), "--config:") {
		t.Errorf("New with a missing providers file: %v, want an ErrConfig naming --config", err)
	}
	c.ConfigFile = filepath.Join(t.TempDir(), "providers.yaml")
	if err := os.WriteFile(c.ConfigFile, []byte("providers: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = New(c, Deps{RESTConfig: brokerREST})
	if !errors.Is(err, ErrConfig) || !strings.HasPrefix(err.Error(), "--tls-cert-dir:") {
		t.Errorf("New without a certificate: %v, want an ErrConfig naming --tls-cert-dir", err)
	}
}

// TestClientConfigsSeparateBudgets: the TokenReviews have a request budget
// of their own, so reviews that use theirs up leave the watches' whole,
// and the other way round.
func TestClientConfigsSeparateBudgets(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	watch, review := clientConfigs(&rest.Config{Host: "https://127.0.0.1:6443"}, c)
	if watch.RateLimiter == nil || review.RateLimiter == nil || watch.RateLimiter == review.RateLimiter {
		t.Fatalf("rate limiters %p and %p, want two", watch.RateLimiter, review.RateLimiter)
	}
	if q := review.RateLimiter.QPS(); q != float32(c.TokenReviewQPS) || q != 100 {
		t.Errorf("TokenReview QPS %v, want --token-review-qps, 100", q)
	}
	if q := watch.RateLimiter.QPS(); q != float32(c.KubeAPIQPS) {
		t.Errorf("watch QPS %v, want --kube-api-qps %v", q, c.KubeAPIQPS)
	}
	reviews := 0
	for review.RateLimiter.TryAccept() {
		reviews++
	}
	if reviews < c.TokenReviewBurst {
		t.Errorf("%d TokenReviews in a burst, want --token-review-burst %d", reviews, c.TokenReviewBurst)
	}
	if !watch.RateLimiter.TryAccept() {
		t.Error("a burst of TokenReviews used up the watches' budget")
	}

	c.TokenReviewQPS = 0
	if _, review := clientConfigs(&rest.Config{}, c); review.RateLimiter != nil || review.QPS >= 0 {
		t.Errorf("--token-review-qps=0: limiter %v, QPS %v; want no client-side limit", review.RateLimiter, review.QPS)
	}
}
