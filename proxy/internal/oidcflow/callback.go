package oidcflow

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/identity"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/redirect"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
)

// MaxIssuedAtSkew is how far in the future an ID token's iat may lie.
const MaxIssuedAtSkew = 5 * time.Minute

// Callback completes a login: it consumes the login state, exchanges the
// code with the PKCE verifier, verifies the ID token, and returns the new
// session and the path to send the browser to. The returned path is "/"
// unless the login state was found, also on error, so the caller can offer
// to start again from the right place. Callback does not save the session.
func (f *Flow) Callback(w http.ResponseWriter, r *http.Request) (*session.Session, string, error) {
	q := r.URL.Query()
	st, err := f.takeLogin(w, r, q.Get("state"))
	if err != nil {
		return nil, st.ReturnOr(), err
	}
	rd := st.ReturnOr()
	if e := q.Get("error"); e != "" {
		// RFC 6749 4.1.2.1: the IdP refused (access_denied, ...).
		return nil, rd, fmt.Errorf("%w: %s", ErrLoginRefused, oauthErrorCode(e))
	}
	code := q.Get("code")
	if code == "" {
		return nil, rd, fmt.Errorf("%w: no code parameter", ErrLoginState)
	}
	if err := f.markUsed(r.Context(), "code", code, f.cfg.Now().Add(LoginWindow)); err != nil {
		if errors.Is(err, ErrUsed) {
			return nil, rd, fmt.Errorf("%w: code replayed: %w", ErrLoginState, err)
		}
		return nil, rd, err
	}
	p := f.waitProvider(r.Context())
	if p == nil {
		return nil, rd, ErrIdPUnavailable
	}
	redirectURL, err := parseRedirect(st.Redirect)
	if err != nil {
		return nil, rd, fmt.Errorf("%w: %w", ErrLoginState, err)
	}
	ctx, cancel := context.WithTimeout(f.clientContext(r.Context()), 15*time.Second)
	defer cancel()
	tok, err := f.oauth2Config(p, redirectURL).Exchange(f.tokenContext(ctx), code, oauth2.VerifierOption(st.Verifier))
	if err != nil {
		return nil, rd, classifyTokenError("exchange code", err)
	}
	s, err := f.sessionFromToken(ctx, p, tok, st.Nonce)
	if err != nil {
		return nil, rd, err
	}
	return s, rd, nil
}

// ReturnOr is the saved path, or "/" when there is none.
func (st loginState) ReturnOr() string {
	if st.Return == "" {
		return redirect.Fallback
	}
	return redirect.SafePath(st.Return)
}

// sessionFromToken verifies the ID token of a token response and builds a
// session from it (OIDC Core 3.1.3.7).
func (f *Flow) sessionFromToken(ctx context.Context, p *provider, tok *oauth2.Token, nonce string) (*session.Session, error) {
	rawID, _ := tok.Extra("id_token").(string)
	if rawID == "" {
		return nil, fmt.Errorf("%w: token response has no id_token", ErrTokenRejected)
	}
	// go-oidc checks the signature against the IdP's JWKS with the algorithms
	// the IdP advertises (so "none" and HS256-with-the-public-key fail), iss,
	// aud containing the client id, and exp (3.1.3.7 steps 1-3, 6-9).
	idt, err := p.verifier.Verify(ctx, rawID)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenRejected, err)
	}
	var claims map[string]json.RawMessage
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenRejected, err)
	}
	if err := f.checkClaims(idt, claims, nonce); err != nil {
		return nil, err
	}
	id := f.identityFrom(claims)
	id.Subject = idt.Subject
	if id.Subject == "" {
		return nil, fmt.Errorf("%w: no sub", ErrTokenRejected)
	}
	if err := f.fillFromUserinfo(ctx, p, tok, &id, claims); err != nil {
		return nil, err
	}
	now := f.cfg.Now()
	var sid string
	_ = json.Unmarshal(claims["sid"], &sid)
	return &session.Session{
		Identity:      id,
		IDToken:       rawID,
		AccessToken:   tok.AccessToken,
		RefreshToken:  tok.RefreshToken,
		TokenExpiry:   tok.Expiry,
		TokenIssuedAt: now,
		SID:           sid,
		CreatedAt:     now,
		ExpiresAt:     now.Add(f.cfg.SessionLifetime),
	}, nil
}

// checkClaims makes the checks go-oidc leaves to the caller.
func (f *Flow) checkClaims(idt *oidc.IDToken, claims map[string]json.RawMessage, nonce string) error {
	// 3.1.3.7 step 11: nonce must equal the one sent.
	if idt.Nonce == "" || subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return fmt.Errorf("%w: nonce mismatch", ErrTokenRejected)
	}
	// Steps 4-5: azp required with several audiences, and equal to the
	// client id when present.
	var azp string
	if raw, ok := claims["azp"]; ok {
		if err := json.Unmarshal(raw, &azp); err != nil {
			return fmt.Errorf("%w: azp is not a string", ErrTokenRejected)
		}
		if azp != f.cfg.ClientID {
			return fmt.Errorf("%w: azp is not this client", ErrTokenRejected)
		}
	} else if len(idt.Audience) > 1 {
		return fmt.Errorf("%w: several audiences and no azp", ErrTokenRejected)
	}
	// Step 10: iat not (much) in the future.
	if idt.IssuedAt.IsZero() {
		return fmt.Errorf("%w: no iat", ErrTokenRejected)
	}
	if idt.IssuedAt.After(f.cfg.Now().Add(MaxIssuedAtSkew)) {
		return fmt.Errorf("%w: iat in the future", ErrTokenRejected)
	}
	return nil
}

// identityFrom reads the identity claims; missing or malformed claims are
// left empty.
func (f *Flow) identityFrom(claims map[string]json.RawMessage) identity.Identity {
	var id identity.Identity
	_ = json.Unmarshal(claims["email"], &id.Email)
	id.EmailVerified = verified(claims)
	_ = json.Unmarshal(claims["preferred_username"], &id.PreferredUsername)
	id.Groups = groups(claims[f.cfg.GroupsClaim])
	return id
}

// verified reads email_verified: absent counts as verified (some IdPs never
// send it), false or "false" as not verified.
func verified(claims map[string]json.RawMessage) bool {
	raw, ok := claims["email_verified"]
	if !ok {
		return true
	}
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return b
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		v, err := strconv.ParseBool(s)
		return err == nil && v
	}
	return false
}

// groups accepts a list of strings or a single string.
func groups(raw json.RawMessage) []string {
	if raw == nil {
		return nil
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return slices.DeleteFunc(list, func(s string) bool { return s == "" })
	}
	var one string
	if json.Unmarshal(raw, &one) == nil && one != "" {
		return []string{one}
	}
	return nil
}

// fillFromUserinfo completes claims the ID token lacks from the userinfo
// endpoint (DESIGN.md behaviour 4): it asks whenever a claim that a rule or
// a header depends on (email, email_verified, preferred_username, groups)
// is absent. A differing sub fails the login (OIDC Core 5.3.2). userinfo
// never overrides a claim the ID token has, and an email_verified from
// userinfo counts only for the same address. When userinfo cannot be
// read, missing claims stay empty and an email whose email_verified is
// unknown counts as unverified, so a failure only makes authorization
// stricter.
func (f *Flow) fillFromUserinfo(ctx context.Context, p *provider, tok *oauth2.Token, id *identity.Identity, claims map[string]json.RawMessage) error {
	_, hasEmail := claims["email"]
	_, hasVerified := claims["email_verified"]
	_, hasGroups := claims[f.cfg.GroupsClaim]
	_, hasName := claims["preferred_username"]
	if p.userinfo == "" || (hasEmail && hasVerified && hasGroups && hasName) {
		return nil
	}
	ui, err := p.oidc.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		f.cfg.Log.WarnContext(ctx, "Userinfo request failed; using ID token claims only", "sub", id.Subject, "error", err)
		if hasEmail && !hasVerified {
			id.EmailVerified = false
		}
		return nil
	}
	if ui.Subject != id.Subject {
		return fmt.Errorf("%w: userinfo sub differs from the ID token's", ErrTokenRejected)
	}
	var uc map[string]json.RawMessage
	if err := ui.Claims(&uc); err != nil {
		if hasEmail && !hasVerified {
			id.EmailVerified = false
		}
		return nil
	}
	switch {
	case !hasEmail:
		_ = json.Unmarshal(uc["email"], &id.Email)
		id.EmailVerified = verified(uc)
	case !hasVerified:
		if _, ok := uc["email_verified"]; ok {
			// About another address, it says nothing of this one.
			var email string
			_ = json.Unmarshal(uc["email"], &email)
			id.EmailVerified = (email == "" || strings.EqualFold(email, id.Email)) && verified(uc)
		}
	}
	if !hasName {
		_ = json.Unmarshal(uc["preferred_username"], &id.PreferredUsername)
	}
	if !hasGroups {
		id.Groups = groups(uc[f.cfg.GroupsClaim])
	}
	return nil
}

// classifyTokenError maps a token endpoint failure: an OAuth error answer
// (4xx, such as invalid_grant) means the IdP refused; a 5xx means it failed;
// anything else (network, timeout) means it is unavailable.
func classifyTokenError(doing string, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		switch re.ErrorCode {
		case "invalid_grant", "invalid_client", "unauthorized_client", "invalid_request", "unsupported_grant_type":
			// RFC 6749 5.2: the IdP refuses this grant for good.
			return fmt.Errorf("%s: %w: %s", doing, ErrLoginRefused, oauthErrorCode(re.ErrorCode))
		case "temporarily_unavailable":
			// RFC 6749 4.1.2.1's code for a server that cannot answer now;
			// the token broker answers it when it cannot reach the IdP, which
			// is an IdP outage (DESIGN.md behaviour 11).
			return fmt.Errorf("%s: %w: HTTP %d %s", doing, ErrIdPUnavailable, status, re.ErrorCode)
		}
		// 5xx, 429, a gateway's error page: the IdP failed, and trying
		// again later may work. So does the token broker's invalid_token
		// (RFC 6750 3.1): it refuses the sidecar's ServiceAccount token,
		// not the user's grant, so it must not end the session.
		return fmt.Errorf("%s: %w: HTTP %d %s", doing, ErrIdPFailed, status, oauthErrorCode(re.ErrorCode))
	}
	// Network errors, timeouts and anything else that is not an answer.
	return fmt.Errorf("%s: %w: %w", doing, ErrIdPUnavailable, err)
}

// oauthErrorCode keeps an IdP-supplied error code printable and short for
// logs.
func oauthErrorCode(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}
