package idptest_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"

	"github.com/gatehouse-dev/gatehouse/proxy/idptest"
)

// assertion signs claims with key as alg, with kid as its kid header.
func assertion(t *testing.T, key crypto.Signer, alg jose.SignatureAlgorithm, kid string, claims jwt.Claims) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// post sends form to the IdP's path, with Basic credentials when user is
// set, and returns the status and the OAuth error code.
func post(t *testing.T, p *idptest.Provider, path string, form url.Values, user, pass string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, p.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := p.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Error
}

// TestClientKey: with a registered key, the token and revocation
// endpoints accept a correct assertion and refuse every other client
// authentication, so a test that passes against the fake IdP proves that
// the assertion was right.
func TestClientKey(t *testing.T) {
	t.Parallel()
	p := idptest.New(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.SetClientKey(key.Public(), "kid-1")
	now := time.Now()
	good := func() jwt.Claims {
		return jwt.Claims{
			Issuer: p.ClientID, Subject: p.ClientID, Audience: jwt.Audience{p.URL + "/token"}, ID: rand.Text(),
			IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute)),
		}
	}
	form := func(a string) url.Values {
		return url.Values{
			"grant_type": {"refresh_token"}, "refresh_token": {"unknown"}, "client_id": {p.ClientID},
			"client_assertion_type": {idptest.ClientAssertionType}, "client_assertion": {a},
		}
	}
	edit := func(f func(*jwt.Claims)) string {
		c := good()
		f(&c)
		return assertion(t, key, jose.ES256, "kid-1", c)
	}
	replayed := assertion(t, key, jose.ES256, "kid-1", good())

	tests := []struct {
		name       string
		form       url.Values
		user, pass string
		// authenticated: the client got past authentication, to the
		// unknown refresh token's invalid_grant.
		authenticated bool
	}{
		{name: "control", form: form(replayed), authenticated: true},
		{name: "jti used before", form: form(replayed)},
		{name: "another key", form: form(assertion(t, other, jose.ES256, "kid-1", good()))},
		{name: "another kid", form: form(assertion(t, key, jose.ES256, "kid-2", good()))},
		{name: "iss", form: form(edit(func(c *jwt.Claims) { c.Issuer = "someone" }))},
		{name: "sub", form: form(edit(func(c *jwt.Claims) { c.Subject = "someone" }))},
		{name: "aud is the issuer", form: form(edit(func(c *jwt.Claims) { c.Audience = jwt.Audience{p.URL} }))},
		{name: "expired", form: form(edit(func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(now.Add(-time.Second)) }))},
		{name: "no exp", form: form(edit(func(c *jwt.Claims) { c.Expiry = nil }))},
		{name: "no jti", form: form(edit(func(c *jwt.Claims) { c.ID = "" }))},
		{name: "no assertion type", form: func() url.Values {
			f := form(edit(func(*jwt.Claims) {}))
			f.Del("client_assertion_type")
			return f
		}()},
		{name: "another client_id", form: func() url.Values {
			f := form(edit(func(*jwt.Claims) {}))
			f.Set("client_id", "someone")
			return f
		}()},
		{name: "a secret besides, in the form", form: func() url.Values {
			f := form(edit(func(*jwt.Claims) {}))
			f.Set("client_secret", p.ClientSecret)
			return f
		}()},
		{name: "a secret besides, Basic", form: form(edit(func(*jwt.Claims) {})), user: p.ClientID, pass: p.ClientSecret},
		{name: "the secret alone", form: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"unknown"}}, user: p.ClientID, pass: p.ClientSecret},
	}
	for _, tc := range tests {
		status, code := post(t, p, "/token", tc.form, tc.user, tc.pass)
		if tc.authenticated && (status != http.StatusBadRequest || code != "invalid_grant") {
			t.Errorf("%s: %d %s, want the unknown refresh token's 400 invalid_grant", tc.name, status, code)
		}
		if !tc.authenticated && (status != http.StatusUnauthorized || code != "invalid_client") {
			t.Errorf("%s: %d %s, want 401 invalid_client", tc.name, status, code)
		}
	}

	revoke := url.Values{"token": {"rt"}, "client_id": {p.ClientID}, "client_assertion_type": {idptest.ClientAssertionType}}
	if status, code := post(t, p, "/revoke", revoke, p.ClientID, p.ClientSecret); status != http.StatusUnauthorized || code != "invalid_client" {
		t.Errorf("revoke with the secret: %d %s, want 401 invalid_client", status, code)
	}
	revoke.Set("client_assertion", assertion(t, key, jose.ES256, "kid-1", good()))
	if status, _ := post(t, p, "/revoke", revoke, "", ""); status != http.StatusOK {
		t.Errorf("revoke with an assertion: %d, want 200", status)
	}

	// Without the key, the client secret works again, and PKCE still
	// holds for a code exchange.
	p.SetClientKey(nil, "")
	verifier := oauth2.GenerateVerifier()
	cfg := oauth2.Config{ClientID: p.ClientID, ClientSecret: p.ClientSecret, Endpoint: oauth2.Endpoint{AuthURL: p.URL + "/auth", TokenURL: p.URL + "/token"}, RedirectURL: "https://app.example.com/cb"}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(cfg.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Exchange(t.Context(), loc.Query().Get("code"), oauth2.VerifierOption(verifier)); err != nil {
		t.Errorf("exchange with the client secret once the key is gone: %v", err)
	}
}
