// Package session owns what a login leaves behind: the Session type, its
// compact binary encoding, the Store interface that cookie and Redis storage
// implement, and the sentinel errors callers branch on.
//
// It does not run the OIDC flow, refresh tokens or decide access; it only
// keeps and returns what it was given.
package session

import (
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
}

// Expired reports whether the session's own lifetime has ended at now.
func (s *Session) Expired(now time.Time) bool { return !now.Before(s.ExpiresAt) }

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
