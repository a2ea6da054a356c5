package proxy

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/oidcflow"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
)

// errCrossSite: a state-changing or token request that is not provably
// same-origin.
var errCrossSite = errors.New("cross-site request refused")

// errBadRequest: a malformed request to one of the proxy's endpoints.
var errBadRequest = errors.New("bad request")

// usedMarker is implemented by stores that record single-use values across
// replicas (the Redis store), for logout tokens' jti and, through
// oidcflow.Config.Shared, login states and codes.
type usedMarker interface {
	oidcflow.UsedMarker
	ForgetUsed(ctx context.Context, kind, key string) error
}

// sameOrigin reports whether r provably comes from a page of this site: a
// matching Origin header, or else Sec-Fetch-Site: same-origin. A request
// with neither header is not same-origin.
func (s *Server) sameOrigin(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" {
		origin, ok := s.flow.Origin(r.Host)
		return ok && o == origin
	}
	return r.Header.Get("Sec-Fetch-Site") == "same-origin"
}

// logout ends the session (DESIGN.md behaviour 8): GET shows a
// confirmation page, a same-origin POST destroys the session, revokes the
// refresh token at the IdP, clears every Gatehouse cookie and redirects.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		writePage(w, page{Status: http.StatusOK, Title: "Sign out?",
			Message: "Sign out of this app. You will need to sign in again to come back.",
			Form:    &form{Action: s.cfg.PathPrefix + "/logout", Button: "Sign out"}})
		return nil
	case http.MethodPost:
	default:
		return errMethod
	}
	if !s.sameOrigin(r) {
		return errCrossSite
	}
	sess, err := s.store.Load(r)
	if errors.Is(err, session.ErrUnavailable) {
		return err
	}
	if err != nil {
		sess = nil
	}
	s.flow.ClearLoginCookies(w, r)
	if err := s.store.Delete(w, r); err != nil {
		return err
	}
	if sess != nil {
		revoked, err := s.flow.RevokeTokens(r.Context(), sess)
		if err != nil {
			s.log.WarnContext(r.Context(), "Token revocation at the IdP failed", "sub", sess.Identity.Subject, "error", err)
		}
		s.log.InfoContext(r.Context(), "Logout", "sub", sess.Identity.Subject, "revoked", revoked)
	}
	target := "/"
	if s.cfg.LogoutRedirect == LogoutIdP && sess != nil {
		if u, ok := s.flow.EndSessionURL(sess.IDToken, s.postLogoutURL(r)); ok {
			target = u
		}
	}
	h := w.Header()
	h.Set("Location", target)
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusSeeOther)
	return nil
}

// postLogoutURL is --post-logout-redirect-url, or the site's "/".
func (s *Server) postLogoutURL(r *http.Request) string {
	if s.cfg.PostLogoutRedirectURL != "" {
		return s.cfg.PostLogoutRedirectURL
	}
	origin, _ := s.flow.Origin(r.Host)
	return origin + "/"
}

// tokenResponse is the body of <prefix>/token.
type tokenResponse struct {
	Token     string `json:"token"`
	ExpiresIn int    `json:"expires_in"`
}

// token hands the page's own scripts a short-lived JWT (DESIGN.md
// behaviour 9): same-origin script calls only.
func (s *Server) token(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return errMethod
	}
	if r.Header.Get("X-Requested-With") != "XMLHttpRequest" || !s.sameOrigin(r) {
		return errCrossSite
	}
	sess, err := s.admitted(w, r)
	if sess == nil {
		return err
	}
	origin, ok := s.flow.Origin(r.Host)
	if !ok {
		return errCrossSite
	}
	tok, exp, err := s.signer.Load().Assertion(sess.Identity, origin, s.cfg.EffectiveTokenAudience())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, tokenResponse{Token: tok, ExpiresIn: int(exp.Sub(s.now()) / time.Second)})
	return nil
}

// maxLogoutTokenBody bounds the back-channel logout request body.
const maxLogoutTokenBody = 64 << 10

// backchannelLogout implements OIDC Back-Channel Logout 1.0: the IdP posts
// a logout token; the sessions of its sid (or else its sub) end on every
// replica that shares the store.
func (s *Server) backchannelLogout(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return errMethod
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLogoutTokenBody)
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	raw := r.PostForm.Get("logout_token")
	if raw == "" {
		return errBadRequest
	}
	lt, err := s.flow.VerifyLogout(r.Context(), raw)
	if err != nil {
		return err
	}
	// Single use of jti (2.6), on this replica and, with Redis, on all. A
	// replay is refused; the mark is made only once the revocation worked,
	// so the IdP's retry after a failure is not taken for a replay.
	used := "jti:" + lt.TokenID
	if err := s.flow.MarkUsed(used, lt.Expiry); err != nil {
		if errors.Is(err, oidcflow.ErrUsed) {
			return errReplayedLogoutToken
		}
		return err // full: 503, and the IdP retries
	}
	fail := func(err error) error {
		s.flow.ForgetUsed(used)
		return err
	}
	m, shared := s.store.(usedMarker)
	if shared {
		fresh, err := m.MarkUsed(r.Context(), "jti", lt.TokenID, max(time.Until(lt.Expiry), time.Minute))
		if err != nil {
			return fail(err)
		}
		if !fresh {
			return errReplayedLogoutToken
		}
	}
	rv, ok := s.store.(session.Revoker)
	if !ok {
		return fail(errors.New("session store cannot revoke sessions"))
	}
	sid, sub := lt.SessionID, ""
	if sid == "" {
		sub = lt.Subject
	}
	if err := rv.Revoke(r.Context(), sid, sub, s.now()); err != nil {
		if shared {
			_ = m.ForgetUsed(context.WithoutCancel(r.Context()), "jti", lt.TokenID)
		}
		return fail(err)
	}
	s.metrics.backchannelLogouts.Inc()
	s.log.InfoContext(r.Context(), "Back-channel logout", "sub", lt.Subject, "bySid", sid != "")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	return nil
}

// errReplayedLogoutToken: a logout token's jti was seen before.
var errReplayedLogoutToken = errors.New("logout token replayed")
