package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/oidcflow"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/redirect"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
)

// serveHTTP is the entry point for every browser request.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	// Client-sent identity headers go first, on every path (behaviour 5),
	// and with them path overrides.
	scrubHeaders(r.Header)
	if !upgradeAllowed(r.Header) {
		s.writeError(w, r, errUpgrade)
		return
	}
	r = s.limitBodyReads(w, r)
	ok, mayBePublic := normalizePath(r)
	if !ok {
		s.writeError(w, r, errBadPath)
		return
	}
	path := r.URL.Path
	if path == s.cfg.PathPrefix || strings.HasPrefix(path, s.cfg.PathPrefix+"/") {
		s.metrics.count(resultEndpoint)
		if err := s.endpoint(w, r, strings.TrimPrefix(path, s.cfg.PathPrefix)); err != nil {
			s.writeError(w, r, err)
		}
		return
	}
	policy := s.policy.Load()
	if mayBePublic && policy.Skip(path) {
		s.metrics.count(resultSkipped)
		stripCookies(r, s.isOurCookie)
		s.proxy.ServeHTTP(w, r)
		return
	}
	if err := s.protected(w, r); err != nil {
		s.writeError(w, r, err)
	}
}

// protected serves a request that needs a session.
func (s *Server) protected(w http.ResponseWriter, r *http.Request) error {
	start := time.Now()
	sess, err := s.store.Load(r)
	switch {
	case errors.Is(err, session.ErrUnavailable):
		return err
	case err != nil:
		return s.unauthenticated(w, r, "no valid session")
	case sess.Expired(s.now()):
		return s.unauthenticated(w, r, "session expired")
	}
	if sess, err = s.maybeRefresh(w, r, sess); err != nil {
		switch {
		case errors.Is(err, errSessionEnded):
			_ = s.store.Delete(w, r)
			return s.unauthenticated(w, r, "refresh refused")
		case errors.Is(err, session.ErrNotFound):
			return s.unauthenticated(w, r, "session ended during refresh")
		}
		return err
	}
	if sess.Stale {
		// Sealed with the previous cookie secret: re-issue under the new one.
		if err := s.store.Save(w, r, sess); err != nil {
			if errors.Is(err, session.ErrNotFound) {
				return s.unauthenticated(w, r, "session ended")
			}
			return err
		}
	}
	decision := s.policy.Load().Decide(sess.Identity)
	if !decision.Allowed {
		s.metrics.count(resultForbidden)
		s.metrics.decisions.WithLabelValues(decision.FailedRule).Inc()
		return &forbiddenError{rule: decision.FailedRule, flags: decision.Flags, sub: sess.Identity.Subject}
	}
	origin, ok := s.flow.Origin(r.Host)
	if !ok {
		return oidcflow.ErrUnknownHost
	}
	assertion, _, err := s.signer.Load().Assertion(sess.Identity, origin, s.cfg.Upstream)
	if err != nil {
		return err
	}
	if s.log.Enabled(r.Context(), slog.LevelDebug) {
		s.log.DebugContext(r.Context(), "Request allowed", "sub", sess.Identity.Subject, "email", sess.Identity.Email, "method", r.Method, "path", r.URL.Path)
	}
	stripCookies(r, s.isOurCookie)
	out := &outbound{identity: sess.Identity, assertion: assertion, setCookie: len(w.Header().Values("Set-Cookie")) > 0}
	if s.cfg.PassAccessToken {
		out.accessToken = sess.AccessToken
	}
	s.metrics.count(resultProxied)
	s.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), outboundKey{}, out)))
	s.metrics.duration.Observe(time.Since(start).Seconds())
	return nil
}

// unauthenticated answers a request without a usable session: navigations
// start a login, everything else gets 401 JSON (behaviour 1).
func (s *Server) unauthenticated(w http.ResponseWriter, r *http.Request, why string) error {
	if !isNavigation(r) {
		s.metrics.count(resultUnauthenticated)
		s.log.DebugContext(r.Context(), "Request unauthenticated", "reason", why, "method", r.Method, "path", r.URL.Path)
		writeUnauthenticated(w)
		return nil
	}
	rd := redirect.SafePath(r.URL.RequestURI())
	if err := s.flow.Start(w, r, rd); err != nil {
		return &retryError{rd: rd, err: err}
	}
	s.metrics.count(resultLogin)
	s.metrics.logins.WithLabelValues("started").Inc()
	s.log.DebugContext(r.Context(), "Login started", "reason", why, "path", r.URL.Path)
	return nil
}

// endpoint serves the proxy's own endpoints under --path-prefix.
func (s *Server) endpoint(w http.ResponseWriter, r *http.Request, name string) error {
	switch name {
	case "/start":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return errMethod
		}
		rd := redirect.SafePath(r.URL.Query().Get("rd"))
		if err := s.flow.Start(w, r, rd); err != nil {
			return &retryError{rd: rd, err: err}
		}
		s.metrics.logins.WithLabelValues("started").Inc()
		return nil
	case "/callback":
		if r.Method != http.MethodGet {
			return errMethod
		}
		return s.callback(w, r)
	case "/jwks.json":
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(s.signer.Load().JWKS())
		return nil
	case "/userinfo":
		return s.userinfo(w, r)
	case "/logout":
		return s.logout(w, r)
	case "/token":
		return s.token(w, r)
	case "/backchannel-logout":
		return s.backchannelLogout(w, r)
	default:
		return errNotFound
	}
}

func (s *Server) callback(w http.ResponseWriter, r *http.Request) error {
	sess, rd, err := s.flow.Callback(w, r)
	if err != nil {
		s.metrics.logins.WithLabelValues("failed").Inc()
		return &retryError{rd: rd, err: err}
	}
	if err := s.store.Save(w, r, sess); err != nil {
		s.metrics.logins.WithLabelValues("failed").Inc()
		return &retryError{rd: rd, err: err}
	}
	s.metrics.logins.WithLabelValues("succeeded").Inc()
	s.log.InfoContext(r.Context(), "Login succeeded", "sub", sess.Identity.Subject, "groups", len(sess.Identity.Groups))
	seeOther(w, redirect.SafePath(rd))
	return nil
}

// userinfoResponse is the JSON of <prefix>/userinfo: the session's identity,
// never its tokens.
type userinfoResponse struct {
	Subject           string   `json:"sub"`
	Email             string   `json:"email,omitempty"`
	EmailVerified     bool     `json:"email_verified"`
	PreferredUsername string   `json:"preferred_username,omitempty"`
	Groups            []string `json:"groups"`
	ExpiresAt         int64    `json:"session_expires_at"`
}

func (s *Server) userinfo(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return errMethod
	}
	sess, err := s.admitted(w, r)
	if sess == nil {
		return err
	}
	groups := sess.Identity.Groups
	if groups == nil {
		groups = []string{}
	}
	writeJSON(w, http.StatusOK, userinfoResponse{
		Subject: sess.Identity.Subject, Email: sess.Identity.VerifiedEmail(), EmailVerified: sess.Identity.EmailVerified,
		PreferredUsername: sess.Identity.PreferredUsername, Groups: groups, ExpiresAt: sess.ExpiresAt.Unix(),
	})
	return nil
}

// admitted loads the session of a request to one of the proxy's own
// endpoints and applies the access policy. A nil session means the answer
// is done: 401 written (no session), or the returned error (403, 503).
func (s *Server) admitted(w http.ResponseWriter, r *http.Request) (*session.Session, error) {
	sess, err := s.store.Load(r)
	switch {
	case errors.Is(err, session.ErrUnavailable):
		return nil, err
	case err != nil || sess.Expired(s.now()):
		writeUnauthenticated(w)
		return nil, nil
	}
	if d := s.policy.Load().Decide(sess.Identity); !d.Allowed {
		return nil, &forbiddenError{rule: d.FailedRule, flags: d.Flags, sub: sess.Identity.Subject}
	}
	return sess, nil
}

// isOurCookie reports whether a cookie belongs to Gatehouse (the session,
// its chunks, login state) and must not reach the app.
func (s *Server) isOurCookie(name string) bool {
	return name == s.cookieName || strings.HasPrefix(name, s.cookieName+"-")
}

// levelFor logs server-side failures as errors, the rest as warnings or
// info.
func (s *Server) levelFor(status int) slog.Level {
	switch {
	case status >= 500:
		return slog.LevelError
	case status == http.StatusForbidden:
		return slog.LevelInfo
	default:
		return slog.LevelWarn
	}
}

func (s *Server) metricsMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		idp := "identity provider: discovered"
		if !s.flow.Ready() {
			idp = "identity provider: not yet discovered (new logins wait; existing sessions are served)"
		}
		if !s.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: not listening\n" + idp + "\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n" + idp + "\n"))
	})
	return mux
}

// seeOther redirects to a local path exactly as given. http.Redirect would
// clean the path, and DESIGN.md behaviour 3 wants it used as is.
func seeOther(w http.ResponseWriter, path string) {
	h := w.Header()
	h.Set("Location", path)
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusFound)
}
