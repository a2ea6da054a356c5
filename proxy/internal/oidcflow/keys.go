package oidcflow

import (
	"errors"
	"net/http"
	"sync"
	"time"
)

// KeyRefetchInterval is the least time between two requests to the IdP's
// JWKS (DESIGN.md behaviour 11). go-oidc refetches the key set whenever a
// token names an unknown key or fails its signature check; without a bound,
// every forged callback or back-channel logout token would become one
// request to the IdP.
const KeyRefetchInterval = 30 * time.Second

// errKeyFetchLimited: a key set refetch asked for within KeyRefetchInterval
// of the last one. go-oidc then verifies with the keys it has.
var errKeyFetchLimited = errors.New("key set fetched less than 30s ago")

// keyFetchLimiter is the transport of the HTTP client that go-oidc's
// RemoteKeySet uses, and of nothing else: it lets one JWKS request through
// per KeyRefetchInterval, shared by every request of the replica, and fails
// the others at once without I/O. go-oidc keeps its cached keys when a
// refetch fails, and still does all the verification.
type keyFetchLimiter struct {
	next http.RoundTripper
	now  func() time.Time

	mu   sync.Mutex // guards last
	last time.Time  // when the last request went out; zero before the first
}

func (l *keyFetchLimiter) RoundTrip(req *http.Request) (*http.Response, error) {
	now := l.now()
	l.mu.Lock()
	if !l.last.IsZero() && now.Sub(l.last) < KeyRefetchInterval {
		l.mu.Unlock()
		return nil, errKeyFetchLimited
	}
	l.last = now
	l.mu.Unlock()
	return l.next.RoundTrip(req)
}

// keyClient returns the HTTP client for go-oidc's key set: the configured
// client behind l.
func (f *Flow) keyClient() *http.Client {
	c := *f.cfg.HTTPClient
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c.Transport = &keyFetchLimiter{next: next, now: f.cfg.Now}
	return &c
}
