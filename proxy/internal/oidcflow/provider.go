package oidcflow

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// provider is everything learnt from discovery. It is built once and never
// changed.
type provider struct {
	oidc     *oidc.Provider
	verifier *oidc.IDTokenVerifier
	endpoint oauth2.Endpoint
	userinfo string
	// Optional endpoints the session lifecycle uses.
	revocation   string
	endSession   string
	algorithms   []string
	discoveredAt time.Time
}

// discovery retry bounds.
const (
	retryFloor   = 500 * time.Millisecond
	retryCeiling = 30 * time.Second
)

// Run discovers the provider in the background, retrying with capped
// exponential backoff until it succeeds or ctx ends. The proxy serves
// existing sessions the whole time (DESIGN.md behaviour 11); only new logins
// wait for discovery.
func (f *Flow) Run(ctx context.Context) {
	delay := retryFloor
	for {
		p, err := f.discover(ctx)
		if err == nil {
			f.setProvider(p)
			f.cfg.Log.InfoContext(ctx, "Identity provider discovered", "issuer", f.cfg.IssuerURL, "revocation", p.revocation != "", "endSession", p.endSession != "")
			return
		}
		f.cfg.Log.WarnContext(ctx, "Identity provider discovery failed; new logins wait", "issuer", f.cfg.IssuerURL, "retryIn", delay.String(), "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, retryCeiling)
	}
}

// Ready reports whether discovery has succeeded.
func (f *Flow) Ready() bool { return f.provider.Load() != nil }

// DiscoveryWait is how long a login that arrives before discovery has
// succeeded waits for it (DESIGN.md behaviour 11): a new Pod receives
// traffic as soon as it is Ready, often while its first discovery is still
// in flight.
const DiscoveryWait = 5 * time.Second

func (f *Flow) setProvider(p *provider) {
	f.provider.Store(p)
	f.discoverOnce.Do(func() { close(f.discovered) })
}

// waitProvider returns the discovered provider, waiting up to
// DiscoveryWait (or until ctx ends) for discovery; nil when there is
// still none.
func (f *Flow) waitProvider(ctx context.Context) *provider {
	if p := f.provider.Load(); p != nil {
		return p
	}
	t := time.NewTimer(DiscoveryWait)
	defer t.Stop()
	select {
	case <-f.discovered:
	case <-t.C:
	case <-ctx.Done():
	}
	return f.provider.Load()
}

func (f *Flow) discover(ctx context.Context) (*provider, error) {
	ctx, cancel := context.WithTimeout(f.clientContext(ctx), 10*time.Second)
	defer cancel()
	op, err := oidc.NewProvider(ctx, f.cfg.IssuerURL)
	if err != nil {
		return nil, fmt.Errorf("discover %s: %w", f.cfg.IssuerURL, err)
	}
	var extra struct {
		Revocation  string   `json:"revocation_endpoint"`
		EndSession  string   `json:"end_session_endpoint"`
		Algorithms  []string `json:"id_token_signing_alg_values_supported"`
		AuthMethods []string `json:"token_endpoint_auth_methods_supported"`
	}
	if err := op.Claims(&extra); err != nil {
		return nil, fmt.Errorf("read discovery document: %w", err)
	}
	// The key set fetches JWKS lazily and refetches on an unknown key id
	// or a failed signature, at most once per KeyRefetchInterval; its
	// requests use the proxy's HTTP client but outlive ctx.
	keyCtx := oidc.ClientContext(context.WithoutCancel(ctx), f.keyClient())
	ep := endpoint(op.Endpoint(), extra.AuthMethods, f.cfg.ClientSecret == "" || f.cfg.Broker != nil)
	revocation := extra.Revocation
	if b := f.cfg.Broker; b != nil {
		// The broker adds the client authentication and passes the IdP's
		// answer through, so only where the requests go changes. It
		// revokes only at an IdP that advertises revocation (RFC 7009).
		ep.TokenURL = b.URL + "/token"
		if revocation != "" {
			revocation = b.URL + "/revoke"
		}
	}
	return &provider{
		oidc: op,
		verifier: op.VerifierContext(keyCtx, &oidc.Config{
			ClientID: f.cfg.ClientID,
			Now:      f.cfg.Now,
		}),
		endpoint:     ep,
		userinfo:     op.UserInfoEndpoint(),
		revocation:   revocation,
		endSession:   extra.EndSession,
		algorithms:   extra.Algorithms,
		discoveredAt: f.cfg.Now(),
	}, nil
}

// clientContext makes go-oidc and x/oauth2 use the configured HTTP client.
func (f *Flow) clientContext(ctx context.Context) context.Context {
	ctx = oidc.ClientContext(ctx, f.cfg.HTTPClient)
	return context.WithValue(ctx, oauth2.HTTPClient, f.cfg.HTTPClient)
}

// tokenContext makes x/oauth2 send a token request with tokenClient. It is
// only for the token request itself: go-oidc reads the same context key,
// and userinfo must not go to the broker.
func (f *Flow) tokenContext(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, f.tokenClient())
}

// tokenClient sends token and revocation requests: the broker's client,
// else the configured one.
func (f *Flow) tokenClient() *http.Client {
	if f.cfg.Broker != nil {
		return f.cfg.Broker.Client
	}
	return f.cfg.HTTPClient
}

// endpoint fixes how the client authenticates at the token endpoint, so
// that x/oauth2 never retries a failed request with the other style
// (which would double every refresh attempt during an IdP outage): a
// public client sends its id in the form; a confidential one uses
// client_secret_basic, the OIDC default, unless the IdP supports only
// client_secret_post.
func endpoint(e oauth2.Endpoint, methods []string, public bool) oauth2.Endpoint {
	switch {
	case public:
		e.AuthStyle = oauth2.AuthStyleInParams
	case len(methods) > 0 && !slices.Contains(methods, "client_secret_basic") && slices.Contains(methods, "client_secret_post"):
		e.AuthStyle = oauth2.AuthStyleInParams
	default:
		e.AuthStyle = oauth2.AuthStyleInHeader
	}
	return e
}
