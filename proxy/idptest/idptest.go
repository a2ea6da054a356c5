// Package idptest is a fake OpenID provider on httptest for the proxy's
// tests. It builds on go-oidc's oidctest (JWKS and SignIDToken) and adds
// discovery with every endpoint the proxy uses, an authorize endpoint that
// logs in a chosen user without a form, a token endpoint that checks PKCE
// (authorization_code and refresh_token grants), userinfo and revocation.
//
// Switches let a test forge tokens (claims, algorithm, key), refuse refresh,
// take the IdP down, or make the token endpoint fail, and a hook shows it
// every request. The client authenticates with its secret, or, once a test
// registers its public key (SetClientKey), with private_key_jwt. It is for
// tests only.
package idptest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/coreos/go-oidc/v3/oidc/oidctest"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
)

// ClientAssertionType is the client_assertion_type of a JWT client
// assertion (RFC 7523 2.2).
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// User is someone the fake IdP can log in.
type User struct {
	Subject           string
	Email             string
	EmailVerified     *bool // nil: the claim is absent
	PreferredUsername string
	Groups            []string
}

// UserHeader on a request to the authorize endpoint names the user to log in
// (by Subject); without it the first added user logs in.
const UserHeader = "X-Idptest-User"

// Provider is the fake IdP.
type Provider struct {
	// URL is the issuer URL.
	URL          string
	ClientID     string
	ClientSecret string
	// Key signs ID tokens; KeyID is its kid.
	Key   *rsa.PrivateKey
	KeyID string

	srv  *httptest.Server
	keys *oidctest.Server

	mu sync.Mutex // guards the fields below
	// IDTokenHook, when set, edits the ID token claims before signing.
	idTokenHook func(claims map[string]any)
	// signHook, when set, turns the claims into the ID token instead of
	// the normal RS256 signature.
	signHook       func(claims []byte) string
	tokenStatus    int // non-zero: the token endpoint answers this status
	refuseRefresh  bool
	down           bool
	userinfoHook   func(claims map[string]any)
	accessTokenTTL time.Duration
	tokenDelay     func()
	users          []User
	codes          map[string]*grant
	refresh        map[string]*grant
	access         map[string]*grant
	revoked        []string
	tokenCalls     map[string]int
	keyFetches     int
	now            func() time.Time
	requestHook    func(r *http.Request)
	discoveryHook  func(doc map[string]any)
	// clientKey, when set, is the client's public key: the client then
	// authenticates with private_key_jwt alone, with assertions whose kid
	// is clientKeyID when that is set. jtis are the assertion ids
	// accepted so far.
	clientKey   crypto.PublicKey
	clientKeyID string
	jtis        map[string]bool
}

type grant struct {
	user        User
	redirectURI string
	challenge   string
	nonce       string
	scope       string
}

// TB is the part of testing.TB that New uses. *testing.T and *testing.B
// satisfy it; a program that is not a test (hack/bench) supplies its own.
type TB interface {
	Helper()
	Fatal(args ...any)
	Cleanup(func())
}

// New starts a fake IdP on 127.0.0.1 with one client. It stops when the
// test ends (on t.Cleanup).
func New(t TB) *Provider {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &Provider{
		ClientID:       "gatehouse-test",
		ClientSecret:   "test-secret",
		Key:            key,
		KeyID:          "key-1",
		codes:          map[string]*grant{},
		refresh:        map[string]*grant{},
		access:         map[string]*grant{},
		tokenCalls:     map[string]int{},
		jtis:           map[string]bool{},
		accessTokenTTL: time.Hour,
		now:            time.Now,
	}
	p.keys = &oidctest.Server{
		PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: p.KeyID, Algorithm: oidc.RS256}},
		Algorithms: []string{oidc.RS256},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", p.discovery)
	mux.Handle("/keys", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.set(func() { p.keyFetches++ })
		p.keys.ServeHTTP(w, r)
	}))
	mux.HandleFunc("/auth", p.authorize)
	mux.HandleFunc("/token", p.token)
	mux.HandleFunc("/userinfo", p.userinfo)
	mux.HandleFunc("/revoke", p.revoke)
	mux.HandleFunc("/logout", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	p.srv = httptest.NewServer(p.gate(mux))
	t.Cleanup(p.srv.Close)
	p.URL = p.srv.URL
	p.keys.SetIssuer(p.URL)
	p.AddUser(User{Subject: "ann", Email: "ann@example.com", EmailVerified: ptr(true), PreferredUsername: "ann", Groups: []string{"developers"}})
	return p
}

func ptr[T any](v T) *T { return &v }

// Client returns an HTTP client for the IdP (plain HTTP on loopback).
func (p *Provider) Client() *http.Client { return p.srv.Client() }

// AddUser registers a user; the first one is the default.
func (p *Provider) AddUser(u User) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users = append(p.users, u)
}

// SetIDTokenHook edits the claims of every ID token issued from now on.
func (p *Provider) SetIDTokenHook(f func(claims map[string]any)) { p.set(func() { p.idTokenHook = f }) }

// SetSignHook replaces the signing of ID tokens (nil restores RS256 with
// Key).
func (p *Provider) SetSignHook(f func(claims []byte) string) { p.set(func() { p.signHook = f }) }

// SetTokenStatus makes the token endpoint answer status (0 restores it).
func (p *Provider) SetTokenStatus(status int) { p.set(func() { p.tokenStatus = status }) }

// SetRefuseRefresh makes refresh grants fail with invalid_grant.
func (p *Provider) SetRefuseRefresh(v bool) { p.set(func() { p.refuseRefresh = v }) }

// SetDown makes every endpoint fail with 503 (the connection stays up).
func (p *Provider) SetDown(v bool) { p.set(func() { p.down = v }) }

// SetUserinfoHook edits userinfo claims.
func (p *Provider) SetUserinfoHook(f func(claims map[string]any)) {
	p.set(func() { p.userinfoHook = f })
}

// SetClientSecret changes the secret the client must present.
func (p *Provider) SetClientSecret(secret string) { p.set(func() { p.ClientSecret = secret }) }

// SetClientKey registers the client's public key (*rsa.PublicKey or
// *ecdsa.PublicKey). From then on the token and revocation endpoints
// authenticate the client by private_key_jwt alone (OIDC Core 9, RFC 7523
// 2.2 and 3): each request must carry client_assertion_type and a
// client_assertion signed with the key (with kid as its kid header unless
// kid is empty) whose iss and sub are the client id, whose aud holds the
// token endpoint, with an exp still to come and a jti not seen before, and
// no client secret besides (RFC 6749 2.3: one method per request).
// Anything else is refused with 401 invalid_client. nil goes back to the
// client secret.
func (p *Provider) SetClientKey(pub crypto.PublicKey, kid string) {
	p.set(func() { p.clientKey, p.clientKeyID = pub, kid })
}

// SetDiscoveryHook edits the discovery document before it is served.
func (p *Provider) SetDiscoveryHook(f func(doc map[string]any)) {
	p.set(func() { p.discoveryHook = f })
}

// SetTokenDelay makes every token request call f (outside the lock) before
// it is answered, so a test can hold a request in flight.
func (p *Provider) SetTokenDelay(f func()) { p.set(func() { p.tokenDelay = f }) }

// SetRequestHook makes every request, before it is answered, call f
// (outside the lock), so a test can see who calls which endpoint with
// which headers. f must not read the body.
func (p *Provider) SetRequestHook(f func(r *http.Request)) { p.set(func() { p.requestHook = f }) }

// SetAccessTokenTTL sets expires_in of new access tokens.
func (p *Provider) SetAccessTokenTTL(d time.Duration) { p.set(func() { p.accessTokenTTL = d }) }

// SetNow sets the IdP's clock.
func (p *Provider) SetNow(now func() time.Time) { p.set(func() { p.now = now }) }

// TokenCalls returns how many token requests of a grant type were made.
func (p *Provider) TokenCalls(grantType string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tokenCalls[grantType]
}

// KeyFetches returns how many requests the JWKS endpoint answered.
func (p *Provider) KeyFetches() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.keyFetches
}

// Revoked returns the tokens revoked so far.
func (p *Provider) Revoked() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.revoked...)
}

func (p *Provider) set(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f()
}

func (p *Provider) gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		down, hook := p.down, p.requestHook
		p.mu.Unlock()
		if hook != nil {
			hook(r)
		}
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (p *Provider) discovery(w http.ResponseWriter, _ *http.Request) {
	doc := map[string]any{
		"issuer":                                p.URL,
		"authorization_endpoint":                p.URL + "/auth",
		"token_endpoint":                        p.URL + "/token",
		"jwks_uri":                              p.URL + "/keys",
		"userinfo_endpoint":                     p.URL + "/userinfo",
		"revocation_endpoint":                   p.URL + "/revoke",
		"end_session_endpoint":                  p.URL + "/logout",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"code_challenge_methods_supported":      []string{"S256"},
	}
	p.mu.Lock()
	hook := p.discoveryHook
	p.mu.Unlock()
	if hook != nil {
		hook(doc)
	}
	writeJSON(w, http.StatusOK, doc)
}

// authorize logs the chosen user in at once and redirects back with a code.
func (p *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != p.ClientID || q.Get("response_type") != "code" {
		http.Error(w, "bad client or response_type", http.StatusBadRequest)
		return
	}
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" {
		http.Error(w, "PKCE S256 required", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	user := p.users[0]
	if want := r.Header.Get(UserHeader); want != "" {
		found := false
		for _, u := range p.users {
			if u.Subject == want {
				user, found = u, true
			}
		}
		if !found {
			p.mu.Unlock()
			http.Error(w, "unknown user", http.StatusBadRequest)
			return
		}
	}
	code := rand.Text()
	p.codes[code] = &grant{user: user, redirectURI: q.Get("redirect_uri"), challenge: q.Get("code_challenge"), nonce: q.Get("nonce"), scope: q.Get("scope")}
	p.mu.Unlock()
	back, err := url.Parse(q.Get("redirect_uri"))
	if err != nil {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	bq := back.Query()
	bq.Set("code", code)
	bq.Set("state", q.Get("state"))
	back.RawQuery = bq.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	gt := r.PostForm.Get("grant_type")
	p.mu.Lock()
	p.tokenCalls[gt]++
	delay := p.tokenDelay
	p.mu.Unlock()
	if delay != nil {
		delay()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tokenStatus != 0 {
		oauthError(w, p.tokenStatus, "server_error")
		return
	}
	if p.clientKey != nil {
		if err := p.checkAssertion(r); err != nil {
			oauthErrorDescription(w, http.StatusUnauthorized, "invalid_client", err.Error())
			return
		}
	} else if id, secret := clientSecret(r); id != p.ClientID || secret != p.ClientSecret {
		oauthError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	switch gt {
	case "authorization_code":
		g, ok := p.codes[r.PostForm.Get("code")]
		// Codes are deliberately reusable here: the proxy must enforce
		// single use itself.
		if !ok || g.redirectURI != r.PostForm.Get("redirect_uri") {
			oauthError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		if oauth2.S256ChallengeFromVerifier(r.PostForm.Get("code_verifier")) != g.challenge {
			oauthError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		p.issue(w, g, true)
	case "refresh_token":
		old := r.PostForm.Get("refresh_token")
		g, ok := p.refresh[old]
		if !ok || p.refuseRefresh {
			oauthError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		delete(p.refresh, old) // rotation: each refresh token works once
		p.issue(w, g, false)
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type")
	}
}

// issue answers a token request; p.mu is held.
func (p *Provider) issue(w http.ResponseWriter, g *grant, withNonce bool) {
	now := p.now()
	claims := map[string]any{
		"iss": p.URL, "sub": g.user.Subject, "aud": p.ClientID,
		"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(),
	}
	if withNonce {
		claims["nonce"] = g.nonce
	}
	if g.user.Email != "" {
		claims["email"] = g.user.Email
	}
	if g.user.EmailVerified != nil {
		claims["email_verified"] = *g.user.EmailVerified
	}
	if g.user.PreferredUsername != "" {
		claims["preferred_username"] = g.user.PreferredUsername
	}
	if g.user.Groups != nil {
		claims["groups"] = g.user.Groups
	}
	if p.idTokenHook != nil {
		p.idTokenHook(claims)
	}
	raw, _ := json.Marshal(claims)
	var idToken string
	if p.signHook != nil {
		idToken = p.signHook(raw)
	} else {
		idToken = oidctest.SignIDToken(p.Key, p.KeyID, oidc.RS256, string(raw))
	}
	rt := rand.Text()
	p.refresh[rt] = g
	// Access tokens are JWTs, as most IdPs issue them, so that sizes in
	// tests and benchmarks are realistic.
	atClaims, _ := json.Marshal(map[string]any{
		"iss": p.URL, "sub": g.user.Subject, "aud": []string{"account", p.ClientID}, "azp": p.ClientID,
		"exp": now.Add(p.accessTokenTTL).Unix(), "iat": now.Unix(), "jti": rand.Text(),
		"scope": g.scope, "typ": "Bearer",
	})
	at := oidctest.SignIDToken(p.Key, p.KeyID, oidc.RS256, string(atClaims))
	p.access[at] = g
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token":  at,
		"token_type":    "Bearer",
		"expires_in":    int(p.accessTokenTTL / time.Second),
		"refresh_token": rt,
		"id_token":      idToken,
		"scope":         g.scope,
	})
}

func (p *Provider) userinfo(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	g, ok := p.access[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	u := g.user
	claims := map[string]any{"sub": u.Subject}
	if u.Email != "" {
		claims["email"] = u.Email
	}
	if u.EmailVerified != nil {
		claims["email_verified"] = *u.EmailVerified
	}
	if u.PreferredUsername != "" {
		claims["preferred_username"] = u.PreferredUsername
	}
	if u.Groups != nil {
		claims["groups"] = u.Groups
	}
	if p.userinfoHook != nil {
		p.userinfoHook(claims)
	}
	writeJSON(w, http.StatusOK, claims)
}

func (p *Provider) revoke(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// The revocation endpoint takes any client with a secret, as before,
	// and only the key's assertions once a key is registered.
	if p.clientKey != nil {
		if err := p.checkAssertion(r); err != nil {
			oauthErrorDescription(w, http.StatusUnauthorized, "invalid_client", err.Error())
			return
		}
	}
	tok := r.PostForm.Get("token")
	p.revoked = append(p.revoked, tok)
	delete(p.refresh, tok)
	w.WriteHeader(http.StatusOK)
}

// clientSecret returns the client id and secret of a request with
// client_secret_basic or client_secret_post (RFC 6749 2.3.1).
func clientSecret(r *http.Request) (id, secret string) {
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	return id, secret
}

// assertionAlgorithms are the JWS algorithms the fake IdP verifies client
// assertions with; the key's type narrows them further.
var assertionAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256, jose.ES384, jose.ES512}

// checkAssertion checks a private_key_jwt client authentication (OIDC
// Core 9, RFC 7523 3) against the registered key; p.mu is held. An
// accepted assertion's jti cannot be used again.
func (p *Provider) checkAssertion(r *http.Request) error {
	if _, _, basic := r.BasicAuth(); basic || r.PostForm.Has("client_secret") {
		return errors.New("a client secret besides the assertion (RFC 6749 2.3: one method per request)")
	}
	if got := r.PostForm.Get("client_assertion_type"); got != ClientAssertionType {
		return fmt.Errorf("client_assertion_type %q", got)
	}
	if id := r.PostForm.Get("client_id"); id != "" && id != p.ClientID {
		return fmt.Errorf("client_id %q", id)
	}
	tok, err := jwt.ParseSigned(r.PostForm.Get("client_assertion"), assertionAlgorithms)
	if err != nil {
		return fmt.Errorf("client_assertion: %w", err)
	}
	if kid := tok.Headers[0].KeyID; p.clientKeyID != "" && kid != p.clientKeyID {
		return fmt.Errorf("client_assertion: kid %q, want %q", kid, p.clientKeyID)
	}
	var c jwt.Claims
	if err := tok.Claims(p.clientKey, &c); err != nil {
		return fmt.Errorf("client_assertion: %w", err)
	}
	if c.Expiry == nil || c.ID == "" {
		return errors.New("client_assertion: exp and jti are required (OIDC Core 9)")
	}
	if err := c.ValidateWithLeeway(jwt.Expected{
		Issuer:      p.ClientID,
		Subject:     p.ClientID,
		AnyAudience: jwt.Audience{p.URL + "/token"},
		Time:        p.now(),
	}, 0); err != nil {
		return fmt.Errorf("client_assertion: %w", err)
	}
	if p.jtis[c.ID] {
		return errors.New("client_assertion: jti used before")
	}
	p.jtis[c.ID] = true
	return nil
}

func oauthError(w http.ResponseWriter, status int, code string) {
	oauthErrorDescription(w, status, code, code)
}

// oauthErrorDescription answers an OAuth error whose description says why.
func oauthErrorDescription(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": "idptest: " + description})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
