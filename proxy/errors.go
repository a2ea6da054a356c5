package proxy

import (
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/url"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/oidcflow"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
)

// forbiddenError is an authenticated user refused by a rule: rule is its
// name for the JSON answer (authz.RuleGroups, ...), flags the settings
// behind it for the page.
type forbiddenError struct{ rule, flags, sub string }

func (e *forbiddenError) Error() string { return "refused by " + e.rule }

// errNotFound is an unknown endpoint under the prefix.
var errNotFound = errors.New("no such endpoint")

// errMethod is a method an endpoint does not take.
var errMethod = errors.New("method not allowed")

// errUpstream: the app did not answer. 502.
var errUpstream = errors.New("upstream request failed")

// errUpgrade is an Upgrade to anything but WebSocket. 400.
var errUpgrade = errors.New("protocol upgrade refused")

// errBadPath is a request path that is not absolute.
var errBadPath = errors.New("request path is not absolute")

// retryError carries where "start again" should lead.
type retryError struct {
	rd  string
	err error
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// classified is how an error is shown.
type classified struct {
	status  int
	code    string // JSON "error"
	title   string
	message string
	retry   bool // offer to start the login again
}

func classify(err error) classified {
	var fe *forbiddenError
	switch {
	case errors.As(err, &fe):
		return classified{http.StatusForbidden, "forbidden", "Access denied",
			fmt.Sprintf("You are signed in, but this app admits only users who pass its %s rule, and your account does not. Ask the app's owners for access, or sign in with another account.", fe.flags), false}
	case errors.Is(err, oidcflow.ErrLoginState):
		return classified{http.StatusBadRequest, "login_expired", "Sign-in could not be completed",
			"This sign-in link has expired, was already used, or was started in another browser. Start again to sign in.", true}
	case errors.Is(err, oidcflow.ErrUnknownHost):
		return classified{http.StatusBadRequest, "unknown_host", "Unknown site",
			"This address is not one the sign-in is configured for. Open the app through its usual address.", false}
	case errors.Is(err, oidcflow.ErrLoginRefused):
		return classified{http.StatusForbidden, "login_refused", "Sign-in refused",
			"The identity provider did not complete the sign-in. Start again, and contact your administrator if it keeps happening.", true}
	case errors.Is(err, oidcflow.ErrTokenRejected):
		return classified{http.StatusForbidden, "invalid_token", "Sign-in could not be verified",
			"The identity provider's answer failed verification, so you were not signed in. Start again; if it keeps happening, tell your administrator the request ID below.", true}
	case errors.Is(err, oidcflow.ErrBusy):
		return classified{http.StatusServiceUnavailable, "logins_busy", "Sign-in is busy",
			"Too many sign-ins are in progress right now. Wait a moment and try again.", true}
	case errors.Is(err, oidcflow.ErrIdPUnavailable):
		return classified{http.StatusServiceUnavailable, "idp_unavailable", "Sign-in is temporarily unavailable",
			"The identity provider cannot be reached right now. Wait a moment and try again.", true}
	case errors.Is(err, oidcflow.ErrIdPFailed):
		return classified{http.StatusBadGateway, "idp_failed", "The identity provider failed",
			"The identity provider answered with an error. Wait a moment and try again.", true}
	case errors.Is(err, session.ErrUnavailable):
		return classified{http.StatusServiceUnavailable, "session_store_unavailable", "Sessions are temporarily unavailable",
			"Your session cannot be read right now. Wait a moment and reload the page.", false}
	case errors.Is(err, session.ErrTooLarge):
		return classified{http.StatusBadGateway, "session_too_large", "Session too large",
			"The identity provider's tokens are too large to keep in cookies. Your platform team can switch this app to the Redis session store.", false}
	case errors.Is(err, errCrossSite):
		return classified{http.StatusForbidden, "forbidden", "Request refused",
			"This action must come from a page of this site. Go back to the app and use its own button.", false}
	case errors.Is(err, oidcflow.ErrLogoutToken), errors.Is(err, errReplayedLogoutToken), errors.Is(err, errBadRequest):
		return classified{http.StatusBadRequest, "invalid_request", "Bad request", "The request is not valid.", false}
	case errors.Is(err, errBodyTimeout):
		return classified{http.StatusRequestTimeout, "request_timeout", "Request timed out",
			"The request body stopped arriving. Try again.", false}
	case errors.Is(err, errUpstream):
		return classified{http.StatusBadGateway, "upstream_unavailable", "The app is not answering",
			"The app behind this page did not answer. Try again in a moment.", false}
	case errors.Is(err, errNotFound):
		return classified{http.StatusNotFound, "not_found", "Not found", "There is nothing here.", false}
	case errors.Is(err, errMethod):
		return classified{http.StatusMethodNotAllowed, "method_not_allowed", "Method not allowed", "This address does not take that kind of request.", false}
	case errors.Is(err, errUpgrade):
		return classified{http.StatusBadRequest, "upgrade_refused", "Bad request", "This app accepts no protocol upgrade but WebSocket.", false}
	case errors.Is(err, errBadPath):
		return classified{http.StatusBadRequest, "bad_request", "Bad request", "The request path is not valid.", false}
	default:
		return classified{http.StatusInternalServerError, "internal", "Something went wrong",
			"The sign-in proxy hit an unexpected error. Try again; if it keeps happening, tell your administrator the request ID below.", false}
	}
}

// requestID makes an identifier that ties an error page to its log line.
// It is not a secret.
func requestID() string { return fmt.Sprintf("%016x", mrand.Uint64()) } //nolint:gosec // an identifier for logs, not a secret

// writeError is the one place an error becomes a response: it picks the
// status and the body (HTML for navigations, JSON otherwise) and logs once.
// The client never sees err.Error().
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	c := classify(err)
	id := requestID()
	var fe *forbiddenError
	if errors.As(err, &fe) {
		// An authorization decision, not a failure.
		s.log.InfoContext(r.Context(), "Request denied", "requestId", id, "sub", fe.sub, "rule", fe.rule, "method", r.Method, "path", r.URL.Path)
	} else {
		s.log.Log(r.Context(), s.levelFor(c.status), "Request failed", "requestId", id, "status", c.status, "method", r.Method, "path", r.URL.Path, "error", err)
		s.metrics.count(resultError)
	}
	if c.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	if !isNavigation(r) {
		body := map[string]string{"error": c.code, "requestId": id}
		if fe != nil {
			body["rule"] = fe.rule // DESIGN.md behaviour 10: name the rule
		}
		writeJSON(w, c.status, body)
		return
	}
	p := page{Status: c.status, Title: c.title, Message: c.message, RequestID: id}
	if c.retry {
		rd := "/"
		var re *retryError
		if errors.As(err, &re) {
			rd = re.rd
		}
		p.Action = s.cfg.PathPrefix + "/start?rd=" + url.QueryEscape(rd)
		p.ActionTxt = "Start again"
	}
	writePage(w, p)
}
