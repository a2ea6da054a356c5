package broker

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

// Operations, the broker's three calls; the label "operation" of its
// metrics and logs.
const (
	OpExchange = "exchange"
	OpRefresh  = "refresh"
	OpRevoke   = "revoke"
	// opOther labels requests that never became one of the three: an
	// unknown path, or a token request without a supported grant_type.
	opOther = "other"
)

// The broker's two endpoints, the last segment of
// /v1/providers/{provider}/{endpoint}.
const (
	endpointToken  = "token"
	endpointRevoke = "revoke"
)

// maxBody bounds a request's form: the largest thing in it is a refresh
// token or an authorization code, a few KiB at most.
const maxBody = 64 << 10

// refusal is an answer the broker gives itself, never one the IdP gave: an
// HTTP status, an OAuth error code (RFC 6749 5.2, RFC 6750 3.1, RFC 7009
// 2.2.1) and a description for the caller. The description is fixed text
// that never echoes what the caller sent; cause, when set, is for the log
// alone.
type refusal struct {
	status      int
	code        string
	description string
	cause       error
}

func (r *refusal) Error() string {
	if r.cause != nil {
		return r.description + ": " + r.cause.Error()
	}
	return r.description
}

func (r *refusal) Unwrap() error { return r.cause }

func invalidRequest(description string) error {
	return &refusal{status: http.StatusBadRequest, code: "invalid_request", description: description}
}

func forbidden(description string) error {
	return &refusal{status: http.StatusForbidden, code: "unauthorized_client", description: description}
}

// unauthenticated refuses the caller's bearer token: RFC 6750 3.1's
// invalid_token, not RFC 6749 5.2's invalid_client. The sidecar takes
// invalid_client for the IdP refusing the client itself and ends the
// session at its refresh; the broker refusing the sidecar's own token (a
// wrong audience, an API server that cannot vouch for it just now) says
// nothing about the user's session, which must survive it.
func unauthenticated(description string, cause error) error {
	return &refusal{status: http.StatusUnauthorized, code: "invalid_token", description: description, cause: cause}
}

func unavailable(description string, cause error) error {
	return &refusal{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", description: description, cause: cause}
}

// errNotFound answers every path that is not a broker endpoint.
var errNotFound = &refusal{status: http.StatusNotFound, code: "not_found", description: "not a broker endpoint: POST /v1/providers/{provider}/token or /revoke"}

// route reads the provider and the endpoint from a request's escaped path,
// /v1/providers/{provider}/token or /v1/providers/{provider}/revoke. The
// provider is one path segment, unescaped; ok is false for any other path.
func route(escapedPath string) (provider, endpoint string, ok bool) {
	rest, found := strings.CutPrefix(escapedPath, "/v1/providers/")
	if !found {
		return "", "", false
	}
	seg, endpoint, found := strings.Cut(rest, "/")
	if !found || seg == "" || (endpoint != endpointToken && endpoint != endpointRevoke) {
		return "", "", false
	}
	provider, err := url.PathUnescape(seg)
	if err != nil || provider == "" {
		return "", "", false
	}
	return provider, endpoint, true
}

// readForm reads a request's application/x-www-form-urlencoded body, the
// only encoding RFC 6749 4.1.3, 6 and RFC 7009 2.1 allow, up to maxBody.
// Parameters in the URL's query are ignored: they are not part of the
// request (RFC 6749 3.2 sends them in the body).
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, invalidRequest("the body must be application/x-www-form-urlencoded")
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, &refusal{status: http.StatusRequestEntityTooLarge, code: "invalid_request", description: fmt.Sprintf("the body is larger than %d bytes", maxBody)}
		}
		return nil, invalidRequest("the body could not be read")
	}
	return parseForm(string(b))
}

// parseForm parses a form body. A parameter given twice is an error (RFC
// 6749 3.1, 3.2: parameters "MUST NOT be included more than once"), so the
// value the broker checks is the only one the IdP can see.
func parseForm(body string) (url.Values, error) {
	form, err := url.ParseQuery(body)
	if err != nil {
		return nil, invalidRequest("the body is not a valid form")
	}
	for _, vs := range form {
		if len(vs) > 1 {
			return nil, invalidRequest("a parameter is repeated")
		}
	}
	return form, nil
}

// call is a checked request: what the IdP receives, less the client
// authentication the broker adds.
type call struct {
	op string
	// form holds only the parameters passed on (passed), each once and
	// never empty.
	form url.Values
	// clientID is the caller's client_id, "" when it sent none. The broker
	// checks it and sends its own.
	clientID string
}

// passed lists, per operation, the only parameters the IdP receives.
// Everything else the caller sent (client_secret, client_assertion,
// resource, ...) is dropped: the broker alone authenticates the client.
var passed = map[string][]string{
	OpExchange: {"grant_type", "code", "redirect_uri", "code_verifier"},
	OpRefresh:  {"grant_type", "refresh_token", "scope"},
	OpRevoke:   {"token", "token_type_hint"},
}

// required lists, per operation, the parameters a request must carry:
// RFC 6749 4.1.3 and 6, RFC 7009 2.1, and code_verifier because every
// Gatehouse sidecar uses PKCE (RFC 7636 4.5), so a code exchanged without
// one was not obtained by a sidecar.
var required = map[string][]string{
	OpExchange: {"code", "redirect_uri", "code_verifier"},
	OpRefresh:  {"refresh_token"},
	OpRevoke:   {"token"},
}

// parseCall reads a token or revocation request's form. Empty parameters
// count as absent (RFC 6749 3.1). It does not check who may make the call
// (checkCall does).
func parseCall(endpoint string, form url.Values) (call, error) {
	var op string
	switch endpoint {
	case endpointRevoke:
		op = OpRevoke
	case endpointToken:
		switch gt := form.Get("grant_type"); gt {
		case "authorization_code":
			op = OpExchange
		case "refresh_token":
			op = OpRefresh
		case "":
			return call{}, invalidRequest("grant_type is required")
		default:
			// RFC 6749 5.2: the broker brokers only the grants a sidecar
			// makes.
			return call{}, &refusal{status: http.StatusBadRequest, code: "unsupported_grant_type", description: "only authorization_code and refresh_token are brokered"}
		}
	default:
		return call{}, errNotFound
	}
	for _, k := range required[op] {
		if form.Get(k) == "" {
			return call{}, invalidRequest(k + " is required")
		}
	}
	if op == OpExchange && !validVerifier(form.Get("code_verifier")) {
		return call{}, invalidRequest("code_verifier is not 43 to 128 unreserved characters (RFC 7636 4.1)")
	}
	c := call{op: op, form: url.Values{}, clientID: form.Get("client_id")}
	for _, k := range passed[op] {
		if v := form.Get(k); v != "" {
			c.form.Set(k, v)
		}
	}
	return c, nil
}

// validVerifier reports whether v is a PKCE code verifier as RFC 7636 4.1
// defines it: 43 to 128 characters of [A-Za-z0-9-._~].
func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for _, c := range []byte(v) {
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
		default:
			return false
		}
	}
	return true
}

// providerFor returns the provider a caller of namespace ns reaches at
// /v1/providers/{name}: one in broker mode whose allowedNamespaces admit
// ns. The same answer for an unknown provider and a forbidden one would
// hide nothing from a tenant who can read the chart's values, so the
// description says which.
func providerFor(fc *controllers.FileConfig, name, ns string) (*controllers.Provider, error) {
	p, ok := fc.Provider(name)
	switch {
	case !ok:
		return nil, forbidden("no such provider")
	case !p.Brokered():
		return nil, forbidden("the provider is not in broker mode")
	case !p.Allows(ns):
		return nil, forbidden("the provider does not serve this namespace")
	}
	return p, nil
}

// checkCall decides whether namespace ns may make call c with provider p.
// registry is the registry ConfigMap's data (nil when there is none); only
// code exchanges consult it.
func checkCall(name string, p *controllers.Provider, ns string, c call, registry map[string]string) error {
	// RFC 6749 3.2.1: a client that sends client_id identifies itself; the
	// broker speaks for one client per provider and for no other.
	if c.clientID != "" && c.clientID != p.ClientID {
		return forbidden("client_id is not the provider's client")
	}
	if c.op != OpExchange {
		return nil
	}
	// RFC 6749 4.1.3: the IdP binds a code to the redirect_uri it was sent
	// to and requires the same one at the exchange, so a namespace that may
	// name only the callbacks its own front doors registered can redeem
	// only codes issued for its own hosts, never another namespace's
	// (controllers.BrokerRedirects.Allows decides what matches).
	raw, ok := registry[ns]
	if !ok {
		return forbidden("no callback URL is registered for this namespace")
	}
	redirects, err := controllers.ParseBrokerRedirects(raw)
	if err != nil {
		return &refusal{status: http.StatusForbidden, code: "unauthorized_client", description: "this namespace's registry entry is not valid", cause: err}
	}
	if !redirects.Allows(name, c.form.Get("redirect_uri")) {
		return forbidden("redirect_uri is not registered for this namespace and provider")
	}
	return nil
}
