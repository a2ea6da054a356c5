package oidcflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/gorilla/securecookie"
	"golang.org/x/oauth2"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/identity"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
)

// RefreshMargin is the most time before expiry at which an access token is
// refreshed (DESIGN.md behaviour 7); shorter-lived tokens are refreshed
// when a quarter of their lifetime remains.
const RefreshMargin = 60 * time.Second

// SetCodecs replaces the login-cookie codecs (a rotated cookie secret).
func (f *Flow) SetCodecs(codecs []securecookie.Codec) { f.codecs.Store(&codecs) }

// RefreshDue reports whether s's access token should be refreshed at now.
func RefreshDue(s *session.Session, now time.Time) bool {
	if s.RefreshToken == "" || s.TokenExpiry.IsZero() {
		return false
	}
	margin := RefreshMargin
	if !s.TokenIssuedAt.IsZero() {
		if life := s.TokenExpiry.Sub(s.TokenIssuedAt); life > 0 {
			margin = min(margin, life/4)
		}
	}
	return s.TokenExpiry.Sub(now) < margin
}

// Refresh exchanges s's refresh token and returns the updated session; s is
// not modified. A rotated refresh token replaces the old one. If the answer
// carries an ID token, it is verified (OIDC Core 12.2: same iss, sub and
// aud) and refreshes the identity. An OAuth error from the IdP is
// ErrLoginRefused (the session must end); network errors and 5xx are
// ErrIdPUnavailable or ErrIdPFailed (keep the session, retry later).
func (f *Flow) Refresh(ctx context.Context, s *session.Session) (*session.Session, error) {
	p := f.provider.Load()
	if p == nil {
		return nil, ErrIdPUnavailable
	}
	ctx, cancel := context.WithTimeout(f.clientContext(ctx), 15*time.Second)
	defer cancel()
	cfg := f.oauth2Config(p, &url.URL{})
	cfg.RedirectURL = ""
	tok, err := cfg.TokenSource(f.tokenContext(ctx), &oauth2.Token{RefreshToken: s.RefreshToken, Expiry: time.Unix(1, 0)}).Token()
	if err != nil {
		return nil, classifyTokenError("refresh token", err)
	}
	next := *s
	next.Ref, next.Stale = s.Ref, false
	next.AccessToken = tok.AccessToken
	if tok.RefreshToken != "" {
		next.RefreshToken = tok.RefreshToken
	}
	next.TokenExpiry = tok.Expiry
	next.TokenIssuedAt = f.cfg.Now()
	if rawID, _ := tok.Extra("id_token").(string); rawID != "" {
		idt, err := p.verifier.Verify(ctx, rawID)
		if err != nil {
			return nil, fmt.Errorf("%w: refreshed ID token: %w", ErrLoginRefused, err)
		}
		if idt.Subject != s.Identity.Subject {
			return nil, fmt.Errorf("%w: refreshed ID token is for another subject", ErrLoginRefused)
		}
		var claims map[string]json.RawMessage
		if err := idt.Claims(&claims); err == nil {
			fresh := f.identityFrom(claims)
			if _, ok := claims["email"]; ok {
				_, hasVerified := claims["email_verified"]
				switch {
				case hasVerified:
					next.Identity.Email, next.Identity.EmailVerified = fresh.Email, fresh.EmailVerified
				case strings.EqualFold(fresh.Email, s.Identity.Email):
					// Same address: email_verified stays as the login
					// established it (perhaps from userinfo).
					next.Identity.Email = fresh.Email
				default:
					// A new address without email_verified: userinfo
					// decides, as at login; only the email is asked for.
					id := identity.Identity{Subject: s.Identity.Subject, Email: fresh.Email, EmailVerified: true}
					known := map[string]json.RawMessage{"email": claims["email"], f.cfg.GroupsClaim: nil, "preferred_username": nil}
					if err := f.fillFromUserinfo(ctx, p, tok, &id, known); err != nil {
						return nil, fmt.Errorf("%w: refreshed identity: %w", ErrLoginRefused, err)
					}
					next.Identity.Email, next.Identity.EmailVerified = id.Email, id.EmailVerified
				}
			}
			if _, ok := claims["preferred_username"]; ok {
				next.Identity.PreferredUsername = fresh.PreferredUsername
			}
			if _, ok := claims[f.cfg.GroupsClaim]; ok {
				next.Identity.Groups = fresh.Groups
			}
		}
		next.IDToken = rawID
	}
	return &next, nil
}

// RevokeTokens revokes s's refresh token, else its access token, at the
// IdP's revocation endpoint (RFC 7009), when it advertises one, or through
// the broker. It reports whether a revocation was made.
func (f *Flow) RevokeTokens(ctx context.Context, s *session.Session) (bool, error) {
	p := f.provider.Load()
	if p == nil || p.revocation == "" {
		return false, nil
	}
	token, hint := s.RefreshToken, "refresh_token"
	if token == "" {
		token, hint = s.AccessToken, "access_token"
	}
	if token == "" {
		return false, nil
	}
	form := url.Values{"token": {token}, "token_type_hint": {hint}}
	secret := f.secret()
	if secret == "" {
		// RFC 7009 2.1 and RFC 6749 2.3.1: a client without a secret (a
		// public client, or one whose broker adds the authentication)
		// names itself in the form.
		form.Set("client_id", f.cfg.ClientID)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.revocation, strings.NewReader(form.Encode()))
	if err != nil {
		return false, fmt.Errorf("revoke token: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if secret != "" {
		// RFC 6749 2.3.1: client_secret_basic with form-encoded credentials.
		req.SetBasicAuth(url.QueryEscape(f.cfg.ClientID), url.QueryEscape(secret))
	}
	resp, err := f.tokenClient().Do(req)
	if err != nil {
		return false, fmt.Errorf("revoke token: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("revoke token: IdP answered HTTP %d", resp.StatusCode)
	}
	return true, nil
}

// EndSessionURL returns the IdP's RP-initiated logout URL with
// id_token_hint and the exact post-logout redirect URI, or false when the
// IdP advertises no end_session_endpoint.
func (f *Flow) EndSessionURL(idTokenHint, postLogout string) (string, bool) {
	p := f.provider.Load()
	if p == nil || p.endSession == "" {
		return "", false
	}
	u, err := url.Parse(p.endSession)
	if err != nil {
		return "", false
	}
	q := u.Query()
	if idTokenHint != "" {
		q.Set("id_token_hint", idTokenHint)
	}
	q.Set("post_logout_redirect_uri", postLogout)
	q.Set("client_id", f.cfg.ClientID)
	u.RawQuery = q.Encode()
	return u.String(), true
}

// ErrLogoutToken means a back-channel logout token failed verification.
var ErrLogoutToken = errors.New("invalid logout token")

// VerifyLogout verifies an OIDC Back-Channel Logout token with go-oidc
// (signature, iss, aud, exp, the logout event, no nonce, sid or sub). The
// caller checks jti for replay.
func (f *Flow) VerifyLogout(ctx context.Context, raw string) (*oidc.LogoutToken, error) {
	p := f.provider.Load()
	if p == nil {
		return nil, ErrIdPUnavailable
	}
	lt, err := p.verifier.VerifyLogout(f.clientContext(ctx), raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLogoutToken, err)
	}
	if lt.IssuedAt.After(f.cfg.Now().Add(MaxIssuedAtSkew)) {
		return nil, fmt.Errorf("%w: iat in the future", ErrLogoutToken)
	}
	return lt, nil
}
