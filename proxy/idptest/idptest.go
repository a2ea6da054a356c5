// Package idptest is a fake OpenID provider on httptest for the proxy's
// tests. It builds on go-oidc's oidctest (JWKS and SignIDToken) and adds
// discovery with every endpoint the proxy uses, an authorize endpoint that
// logs in a chosen user without a form, a token endpoint that checks PKCE
// (authorization_code and refresh_token grants), userinfo and revocation.
//
// Switches let a test forge tokens (claims, algorithm, key), refuse refresh,
// take the IdP down, or make the token endpoint fail, and a hook shows it
// every request. It is for tests only.
package idptest

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/coreos/go-oidc/v3/oidc/oidctest"
	"golang.org/x/oauth2"
)

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
	writeJSON(w, http.StatusOK, map[string]any{
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
	})
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
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
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
	if id != p.ClientID || secret != p.ClientSecret {
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
	tok := r.PostForm.Get("token")
	p.revoked = append(p.revoked, tok)
	delete(p.refresh, tok)
	w.WriteHeader(http.StatusOK)
}

func oauthError(w http.ResponseWriter, status int, code string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": fmt.Sprintf("idptest: %s", code)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
