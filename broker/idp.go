package broker

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// idpTimeout bounds each request to an identity provider: discovery, token
// and revocation.
const idpTimeout = 15 * time.Second

// maxAnswer bounds the IdP answer the broker relays.
const maxAnswer = 1 << 20

// Discovery is retried after a failure no sooner than this, doubling up to
// the ceiling; until then requests for the provider fail at once.
const (
	retryFloor   = time.Second
	retryCeiling = time.Minute
)

// authStyle is how the broker authenticates the client at the IdP.
type authStyle int

const (
	// authBasic is client_secret_basic: HTTP Basic authentication (RFC
	// 6749 2.3.1).
	authBasic authStyle = iota
	// authPost is client_secret_post: client_id and client_secret in the
	// form (RFC 6749 2.3.1).
	authPost
	// authPrivateKeyJWT is private_key_jwt: client_id and a client
	// assertion signed with the client's key in the form (OIDC Core 9,
	// RFC 7523 2.2).
	authPrivateKeyJWT
)

func (a authStyle) String() string {
	switch a {
	case authPost:
		return "client_secret_post"
	case authPrivateKeyJWT:
		return methodPrivateKeyJWT
	default:
		return "client_secret_basic"
	}
}

// authStyleFor picks the client authentication for an endpoint from the
// methods the IdP advertises: client_secret_basic, which every
// authorization server must support for clients with a password (RFC 6749
// 2.3.1) and which is the default when none are listed (RFC 8414 2, OIDC
// Discovery 3), unless the IdP lists client_secret_post and not basic.
func authStyleFor(methods []string) authStyle {
	if len(methods) > 0 && !slices.Contains(methods, "client_secret_basic") && slices.Contains(methods, "client_secret_post") {
		return authPost
	}
	return authBasic
}

// endpoint is one of an IdP's endpoints and the client authentication it
// takes.
type endpoint struct {
	url string
	// secretAuth is how it takes a client secret.
	secretAuth authStyle
	// methods and signingAlgs are its *_auth_methods_supported and
	// *_auth_signing_alg_values_supported, nil when discovery lists none.
	methods, signingAlgs []string
}

// endpoints is what the broker learnt from a provider's discovery.
type endpoints struct {
	token endpoint
	// revocation's url is empty when the IdP has no revocation endpoint.
	revocation endpoint
}

// idp is one provider's discovery: done lazily on the first request,
// remembered for the life of the process, and after a failure retried
// with backoff.
type idp struct {
	issuer string
	// keyAuth is set when the provider authenticates with a private key.
	keyAuth bool

	// mu guards the fields below and is held during discovery, so
	// concurrent requests wait for one discovery instead of each making
	// their own.
	mu      sync.Mutex
	found   *endpoints
	retryAt time.Time
	delay   time.Duration
}

// endpoints returns the provider's endpoints, discovering them first if
// need be. A failed discovery wraps a 503 refusal.
func (s *Server) endpoints(ctx context.Context, d *idp) (*endpoints, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.found != nil {
		return d.found, nil
	}
	if now := s.now(); now.Before(d.retryAt) {
		return nil, unavailable("the identity provider's discovery failed; retrying later", nil)
	}
	// A caller leaving early must not fail the discovery for the others.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), idpTimeout)
	defer cancel()
	ep, err := discover(oidc.ClientContext(ctx, s.idpClient), d.issuer)
	if err != nil {
		d.delay = min(max(d.delay*2, retryFloor), retryCeiling)
		d.retryAt = s.now().Add(d.delay)
		s.log.ErrorContext(ctx, "Identity provider discovery failed", "issuer", d.issuer, "retryIn", d.delay.String(), "error", err)
		return nil, unavailable("the identity provider cannot be reached", err)
	}
	d.found, d.delay = ep, 0
	auth := ep.token.secretAuth
	if d.keyAuth {
		auth = authPrivateKeyJWT
	}
	s.log.InfoContext(ctx, "Identity provider discovered", "issuer", d.issuer, "tokenAuth", auth.String(), "revocation", ep.revocation.url != "")
	return ep, nil
}

// discover reads an issuer's discovery document.
func discover(ctx context.Context, issuer string) (*endpoints, error) {
	op, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		return nil, fmt.Errorf("discover %s: %w", issuer, err)
	}
	var extra struct {
		Revocation            string   `json:"revocation_endpoint"`
		TokenAuthMethods      []string `json:"token_endpoint_auth_methods_supported"`
		TokenSigningAlgs      []string `json:"token_endpoint_auth_signing_alg_values_supported"`
		RevocationAuthMethods []string `json:"revocation_endpoint_auth_methods_supported"`
		RevocationSigningAlgs []string `json:"revocation_endpoint_auth_signing_alg_values_supported"`
	}
	if err := op.Claims(&extra); err != nil {
		return nil, fmt.Errorf("read discovery document: %w", err)
	}
	ep := &endpoints{token: endpoint{
		url:         op.Endpoint().TokenURL,
		secretAuth:  authStyleFor(extra.TokenAuthMethods),
		methods:     extra.TokenAuthMethods,
		signingAlgs: extra.TokenSigningAlgs,
	}}
	if err := checkEndpoint(issuer, ep.token.url); err != nil {
		return nil, fmt.Errorf("token_endpoint: %w", err)
	}
	if extra.Revocation != "" {
		if err := checkEndpoint(issuer, extra.Revocation); err != nil {
			return nil, fmt.Errorf("revocation_endpoint: %w", err)
		}
		// RFC 8414 2: without its own list, the revocation endpoint takes
		// client_secret_basic; IdPs that list only the token endpoint's
		// methods (and algorithms) mean them for both.
		methods, algs := extra.RevocationAuthMethods, extra.RevocationSigningAlgs
		if len(methods) == 0 {
			methods = extra.TokenAuthMethods
		}
		if len(algs) == 0 {
			algs = extra.TokenSigningAlgs
		}
		ep.revocation = endpoint{url: extra.Revocation, secretAuth: authStyleFor(methods), methods: methods, signingAlgs: algs}
	}
	return ep, nil
}

// checkEndpoint refuses an endpoint the client secret must not be sent to:
// anything but https, except http when the issuer itself is (the loopback
// issuers controllers.ParseFile admits for development).
func checkEndpoint(issuer, endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", endpoint)
	}
	if u.Scheme == "https" || (u.Scheme == "http" && strings.HasPrefix(issuer, "http://")) {
		return nil
	}
	return fmt.Errorf("%q is not https", endpoint)
}

// answer is an IdP's response, relayed as it came.
type answer struct {
	status      int
	contentType string
	body        []byte
}

// clientAuth is the client authentication of one request to the IdP:
// the client id with a secret or with a client assertion, as style says.
type clientAuth struct {
	style     authStyle
	clientID  string
	secret    string
	assertion string
}

// forward sends c to the IdP's endpoint at URL target with the client's
// credentials and returns the IdP's answer, whatever its status. Only an
// IdP that cannot be reached, or answers too much, is an error.
func (s *Server) forward(ctx context.Context, target string, c call, a clientAuth) (answer, error) {
	form := url.Values(maps.Clone(c.form))
	switch a.style {
	case authPost:
		form.Set("client_id", a.clientID)
		form.Set("client_secret", a.secret)
	case authPrivateKeyJWT:
		// RFC 7523 2.2; client_id too, which OIDC Core 9 leaves optional
		// and some IdPs require.
		form.Set("client_id", a.clientID)
		form.Set("client_assertion_type", assertionType)
		form.Set("client_assertion", a.assertion)
	}
	ctx, cancel := context.WithTimeout(ctx, idpTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		return answer{}, unavailable("the identity provider's endpoint is not valid", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if a.style == authBasic {
		// RFC 6749 2.3.1: the client id and secret are form-encoded
		// before they go into the Basic credentials.
		req.SetBasicAuth(url.QueryEscape(a.clientID), url.QueryEscape(a.secret))
	}
	resp, err := s.forwardClient.Do(req)
	if err != nil {
		return answer{}, unavailable("the identity provider cannot be reached", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return answer{}, unavailable("the identity provider's answer was cut off", err)
	}
	if len(body) > maxAnswer {
		return answer{}, &refusal{status: http.StatusBadGateway, code: "server_error", description: "the identity provider's answer is too large"}
	}
	return answer{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: body}, nil
}
