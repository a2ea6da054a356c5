package idp_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/gatehouse-dev/gatehouse/e2e/idp"
)

// rp is a tiny relying party on 127.0.0.1: /login starts an authorization
// code flow with PKCE, /callback records the authorization response,
// /logged-out is the post-logout redirect and /backchannel receives
// back-channel logout tokens.
type rp struct {
	srv    *httptest.Server
	config oauth2.Config // set once the IdP runs

	mu          sync.Mutex
	state       string
	nonce       string
	verifier    string
	callback    url.Values
	logoutToken string
}

func newRP(t *testing.T) *rp {
	r := &rp{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.state, r.nonce, r.verifier = random(), random(), oauth2.GenerateVerifier()
		http.Redirect(w, req, r.config.AuthCodeURL(r.state,
			oauth2.S256ChallengeOption(r.verifier), oidc.Nonce(r.nonce)), http.StatusFound)
	})
	mux.HandleFunc("GET /callback", func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.callback = req.URL.Query()
		r.mu.Unlock()
		io.WriteString(w, "callback reached")
	})
	mux.HandleFunc("GET /logged-out", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "logged out")
	})
	mux.HandleFunc("POST /backchannel", func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.logoutToken = req.PostFormValue("logout_token")
		r.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})
	r.srv = httptest.NewServer(mux) // listens on 127.0.0.1
	t.Cleanup(r.srv.Close)
	return r
}

func random() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newBrowser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second}
}

// TestAuthorizationCodeFlow proves the harness: sign-in with PKCE, ID token
// verification, claims, refresh with rotation, revocation, RP-initiated and
// back-channel logout, and a wrong password.
func TestAuthorizationCodeFlow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	r := newRP(t)
	p := idp.Start(t, idp.Options{
		RedirectURIs:           []string{r.srv.URL + "/callback"},
		PostLogoutRedirectURIs: []string{r.srv.URL + "/logged-out"},
		BackchannelLogoutURI:   r.srv.URL + "/backchannel",
		AccessTokenTTL:         90 * time.Second,
	})

	provider, err := oidc.NewProvider(ctx, p.Issuer)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	var discovery struct {
		EndSession string   `json:"end_session_endpoint"`
		Revocation string   `json:"revocation_endpoint"`
		PKCE       []string `json:"code_challenge_methods_supported"`
	}
	if err := provider.Claims(&discovery); err != nil {
		t.Fatal(err)
	}
	if discovery.EndSession == "" || discovery.Revocation == "" || !slices.Equal(discovery.PKCE, []string{"S256"}) {
		t.Fatalf("discovery: unexpected %+v", discovery)
	}
	verifier := provider.Verifier(&oidc.Config{ClientID: p.ClientID})
	r.config = oauth2.Config{
		ClientID:     p.ClientID,
		ClientSecret: p.ClientSecret,
		Endpoint:     provider.Endpoint(),
		RedirectURL:  r.srv.URL + "/callback",
		Scopes:       []string{oidc.ScopeOpenID, "email", "profile", "groups"},
	}

	t.Run("PKCERequired", func(t *testing.T) {
		c := newBrowser(t)
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err := c.Get(r.config.AuthCodeURL("state-without-pkce"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := resp.Location()
		if loc == nil || loc.Query().Get("error") != "invalid_request" || !strings.Contains(loc.Query().Get("error_description"), "PKCE") {
			t.Fatalf("authorization without PKCE: %s, Location %v; want a redirect with error=invalid_request about PKCE", resp.Status, loc)
		}
	})

	t.Run("WrongPassword", func(t *testing.T) {
		resp, err := idp.Login(newBrowser(t), r.srv.URL+"/login", idp.DemoUser, "not-the-password")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), idp.LoginError) || !strings.Contains(string(body), idp.LoginTitle) {
			t.Fatalf("wrong password: %s at %s, want 401 and the login page with %q:\n%s", resp.Status, resp.Request.URL, idp.LoginError, body)
		}
	})

	// Sign in as demo, starting on the relying party's origin.
	browser := newBrowser(t)
	resp, err := idp.Login(browser, r.srv.URL+"/login", idp.DemoUser, idp.DemoPassword)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "callback reached" {
		t.Fatalf("login ended with %s at %s:\n%s", resp.Status, resp.Request.URL, body)
	}
	r.mu.Lock()
	cb, state, nonce, pkceVerifier := r.callback, r.state, r.nonce, r.verifier
	r.mu.Unlock()
	if cb.Get("state") != state || cb.Get("iss") != p.Issuer || cb.Get("code") == "" {
		t.Fatalf("callback query %v, want state %q, iss %q and a code", cb, state, p.Issuer)
	}

	// With a session at the IdP, Login goes straight through (and the code of
	// this second flow is left unused).
	resp, err = idp.Login(browser, r.srv.URL+"/login", idp.DemoUser, idp.DemoPassword)
	if err != nil {
		t.Fatalf("login with a session: %v", err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "callback reached" {
		t.Fatalf("login with a session ended with %s at %s:\n%s", resp.Status, resp.Request.URL, body)
	}

	tok, err := r.config.Exchange(ctx, cb.Get("code"), oauth2.VerifierOption(pkceVerifier))
	if err != nil {
		t.Fatalf("code exchange: %v", err)
	}
	if tok.RefreshToken == "" {
		t.Fatal("code exchange returned no refresh token (offline_access was not requested)")
	}
	if ttl := time.Until(tok.Expiry); ttl > 90*time.Second || ttl < 60*time.Second {
		t.Errorf("access token expires in %v, want about 90s", ttl)
	}

	type claims struct {
		Sub               string   `json:"sub"`
		SID               string   `json:"sid"`
		Nonce             string   `json:"nonce"`
		Email             string   `json:"email"`
		EmailVerified     bool     `json:"email_verified"`
		Name              string   `json:"name"`
		PreferredUsername string   `json:"preferred_username"`
		Groups            []string `json:"groups"`
	}
	checkIDToken := func(tok *oauth2.Token, wantNonce string) (*oidc.IDToken, claims) {
		t.Helper()
		raw, _ := tok.Extra("id_token").(string)
		if raw == "" {
			t.Fatal("token response without id_token")
		}
		idt, err := verifier.Verify(ctx, raw)
		if err != nil {
			t.Fatalf("verifying the ID token: %v", err)
		}
		var c claims
		if err := idt.Claims(&c); err != nil {
			t.Fatal(err)
		}
		want := claims{Sub: "demo", SID: c.SID, Nonce: wantNonce, Email: idp.DemoEmail, EmailVerified: true,
			Name: "demo", PreferredUsername: "demo", Groups: []string{"demo", "developers"}}
		if c.SID == "" || !slices.Equal(c.Groups, want.Groups) || c.Sub != want.Sub || c.Nonce != want.Nonce ||
			c.Email != want.Email || !c.EmailVerified || c.Name != want.Name || c.PreferredUsername != want.PreferredUsername {
			t.Fatalf("ID token claims %+v, want %+v with a sid", c, want)
		}
		return idt, c
	}
	_, first := checkIDToken(tok, nonce)

	// Refresh: a new access token and a rotated refresh token.
	refreshed, err := r.config.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if refreshed.RefreshToken == "" || refreshed.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh token not rotated: old %q, new %q", tok.RefreshToken, refreshed.RefreshToken)
	}
	if refreshed.AccessToken == tok.AccessToken {
		t.Fatal("refresh returned the same access token")
	}
	checkIDToken(refreshed, nonce)

	info, err := provider.UserInfo(ctx, oauth2.StaticTokenSource(refreshed))
	if err != nil {
		t.Fatalf("userinfo: %v", err)
	}
	if info.Subject != "demo" || info.Email != idp.DemoEmail {
		t.Fatalf("userinfo: sub %q email %q", info.Subject, info.Email)
	}

	// Revoke the refresh token: the grant goes, the access token with it.
	revoke := url.Values{"token": {refreshed.RefreshToken}, "token_type_hint": {"refresh_token"}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, discovery.Revocation, strings.NewReader(revoke.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(p.ClientID), url.QueryEscape(p.ClientSecret))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revocation: %s", resp.Status)
	}
	_, err = r.config.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshed.RefreshToken}).Token()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("refresh with a revoked token: %v, want invalid_grant", err)
	}
	if _, err := provider.UserInfo(ctx, oauth2.StaticTokenSource(refreshed)); err == nil {
		t.Fatal("userinfo accepted an access token of a revoked grant")
	}
	counts, err := p.Revocations()
	if err != nil {
		t.Fatal(err)
	}
	if counts["RefreshToken"] != 1 {
		t.Fatalf("revocation counts %v, want one RefreshToken", counts)
	}
	waitLog(t, p, "token grant_type=authorization_code status=200")
	waitLog(t, p, "token grant_type=refresh_token status=200")
	waitLog(t, p, "token grant_type=refresh_token status=400 error=invalid_grant")
	waitLog(t, p, "revocation token_type_hint=refresh_token revoked=RefreshToken status=200")

	// RP-initiated logout: confirm on the IdP, which notifies the back-channel
	// logout URI with the session's sid, then back to the post-logout URI.
	end, _ := url.Parse(discovery.EndSession)
	end.RawQuery = url.Values{
		"id_token_hint":            {tok.Extra("id_token").(string)},
		"post_logout_redirect_uri": {r.srv.URL + "/logged-out"},
	}.Encode()
	resp, err = idp.Logout(browser, end.String())
	if err != nil {
		t.Fatalf("logout: %v", err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "logged out" {
		t.Fatalf("logout ended with %s at %s:\n%s", resp.Status, resp.Request.URL, body)
	}
	r.mu.Lock()
	logoutToken := r.logoutToken
	r.mu.Unlock()
	if logoutToken == "" {
		t.Fatal("no back-channel logout token received")
	}
	// A logout token is signed like an ID token; it has no nonce and no exp
	// requirement, so verify its signature and check sid and events.
	lt, err := provider.Verifier(&oidc.Config{ClientID: p.ClientID, SkipExpiryCheck: true}).Verify(ctx, logoutToken)
	if err != nil {
		t.Fatalf("verifying the logout token: %v", err)
	}
	var ltClaims struct {
		SID    string         `json:"sid"`
		Events map[string]any `json:"events"`
	}
	if err := lt.Claims(&ltClaims); err != nil {
		t.Fatal(err)
	}
	if _, ok := ltClaims.Events["http://schemas.openid.net/event/backchannel-logout"]; !ok || ltClaims.SID != first.SID {
		t.Fatalf("logout token claims %+v, want the back-channel logout event and sid %q", ltClaims, first.SID)
	}

	// Signed out at the IdP: the next sign-in shows the login page again.
	resp, err = idp.Login(browser, r.srv.URL+"/login", idp.AliceUser, idp.AlicePassword)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "callback reached" {
		t.Fatalf("login after logout ended with %s at %s:\n%s", resp.Status, resp.Request.URL, body)
	}
	waitLog(t, p, `login user="alice" result=ok`)
}

// waitLog waits for the IdP to log line (its stderr arrives asynchronously).
func waitLog(t *testing.T, p *idp.IdP, line string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) { //nolint:forbidigo // polling a real process
		if slices.Contains(p.LogLines(), line) {
			return
		}
	}
	t.Fatalf("the IdP did not log %q; it logged:\n%s", line, strings.Join(p.LogLines(), "\n"))
}
