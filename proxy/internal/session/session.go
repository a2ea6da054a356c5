// Package session owns what a login leaves behind: the Session type, its
// compact binary encoding, the Store interface that cookie and Redis storage
// implement, and the sentinel errors callers branch on.
//
// It does not run the OIDC flow, refresh tokens or decide access; it only
// keeps and returns what it was given.
package session

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/identity"
)

// ErrNotFound means the request carries no usable session: no cookie, or a
// tampered, truncated, foreign or expired one. Callers treat it exactly like
// an anonymous request.
var ErrNotFound = errors.New("no session")

// ErrUnavailable means a session may exist but the store cannot be reached;
// the proxy answers 503 rather than starting a login.
var ErrUnavailable = errors.New("session store unavailable")

// ErrTooLarge means a session does not fit the store's limits.
var ErrTooLarge = errors.New("session too large")

// Session is one user's login.
type Session struct {
	// Identity is who the user is, from the verified ID token.
	Identity identity.Identity
	// IDToken is the raw ID token, kept for RP-initiated logout
	// (id_token_hint).
	IDToken string
	// AccessToken and RefreshToken are the OAuth tokens; never sent to the
	// browser.
	AccessToken  string
	RefreshToken string
	// TokenExpiry is when the access token expires; zero when unknown.
	TokenExpiry time.Time
	// CreatedAt is when the user logged in.
	CreatedAt time.Time
	// ExpiresAt ends the session whatever the tokens say
	// (--session-lifetime).
	ExpiresAt time.Time
	// TokenIssuedAt is when the current access token was received; with
	// TokenExpiry it gives the token's lifetime.
	TokenIssuedAt time.Time
	// SID is the IdP's session id ("sid" of the ID token), used by
	// back-channel logout; may be empty.
	SID string

	// Ref is the store's reference to this session (the Redis store keeps
	// the session id and record key here); it is set by Load and Save and
	// never encoded.
	Ref string
	// Stale is set by Load when the session was sealed with an older
	// cookie secret; the caller saves it again to re-issue it.
	Stale bool
}

// Expired reports whether the session's own lifetime has ended at now.
func (s *Session) Expired(now time.Time) bool { return !now.Before(s.ExpiresAt) }

// Revoker is implemented by stores that can end sessions they cannot see
// the cookie of: OIDC Back-Channel Logout names an IdP session (sid) or a
// user (sub), and every session of theirs created before at must end.
type Revoker interface {
	// Revoke ends the sessions whose SID equals sid (when sid is not
	// empty) or whose subject equals sub (when sub is not empty).
	Revoke(ctx context.Context, sid, sub string, at time.Time) error
}

// Store keeps sessions between requests. Implementations must treat every
// problem with what the browser sent as ErrNotFound, and only problems of
// their own backend as ErrUnavailable.
type Store interface {
	// Load returns the request's session, ErrNotFound or ErrUnavailable.
	// It does not check Expired; the caller does.
	Load(r *http.Request) (*Session, error)
	// Save stores s and sets whatever cookies refer to it on w.
	Save(w http.ResponseWriter, r *http.Request, s *Session) error
	// Delete forgets the request's session and clears its cookies on w.
	Delete(w http.ResponseWriter, r *http.Request) error
}
