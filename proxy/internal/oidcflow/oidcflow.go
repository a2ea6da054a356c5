// Package oidcflow runs the OpenID Connect authorization code flow for the
// proxy: discovery, the start of a login, and the callback that turns a code
// into a verified session.
//
// Every security primitive comes from a library: PKCE from x/oauth2,
// signature, iss, aud and exp checks from go-oidc, cookie sealing from
// gorilla/securecookie. This package adds the checks those libraries leave to
// the relying party (nonce, azp, iat, single use of state and code). It does
// not store sessions or decide access.
package oidcflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/securecookie"
	"golang.org/x/oauth2"
)

// Errors the proxy maps to responses.
var (
	// ErrLoginState: the callback's state is missing, unknown, expired or
	// already used. 400 with a link to start again.
	ErrLoginState = errors.New("login state missing, expired or already used")
	// ErrUnknownHost: the request's Host matches no --redirect-url. 400.
	ErrUnknownHost = errors.New("host has no registered redirect URL")
	// ErrLoginRefused: the IdP refused the login or the code. 403.
	ErrLoginRefused = errors.New("identity provider refused the login")
	// ErrTokenRejected: the ID token failed verification. 403.
	ErrTokenRejected = errors.New("ID token rejected")
	// ErrIdPUnavailable: the IdP is not discovered yet or unreachable. 503.
	ErrIdPUnavailable = errors.New("identity provider unavailable")
	// ErrIdPFailed: the IdP answered with a server error. 502.
	ErrIdPFailed = errors.New("identity provider failed")
	// ErrBusy: the replica's set of used states and codes is full of
	// unexpired entries, so it cannot take a new login until some expire.
	// 503 with Retry-After.
	ErrBusy = errors.New("too many logins in progress")
	// ErrUsed: a single-use value (state, code, logout token id) was
	// already used.
	ErrUsed = errors.New("already used")
)

// UsedMarker records single-use values across replicas (the Redis store).
// MarkUsed reports false when key was already recorded; its errors wrap
// session.ErrUnavailable.
type UsedMarker interface {
	MarkUsed(ctx context.Context, kind, key string, ttl time.Duration) (bool, error)
}

// Config configures a Flow. All fields are validated by the proxy's Config.
type Config struct {
	IssuerURL string
	ClientID  string
	// ClientSecret is empty for a public client (PKCE only).
	ClientSecret string
	Scopes       []string
	// RedirectURLs are the exact callback URLs registered at the IdP.
	RedirectURLs []*url.URL
	GroupsClaim  string
	// CookieName is the session cookie's name; login cookies are named
	// CookieName + "-login-" + a random id.
	CookieName string
	Secure     bool
	// Codecs seal login cookies; the first encodes.
	Codecs          []securecookie.Codec
	SessionLifetime time.Duration
	// Shared, when set, records used states and codes for every replica
	// (DESIGN.md behaviour 2), besides the replica's own set.
	Shared UsedMarker
	// HTTPClient talks to the IdP: discovery, keys, userinfo and, without
	// a Broker, the token and revocation endpoints.
	HTTPClient *http.Client
	// Broker, when set, takes the token and revocation requests instead
	// of the IdP; ClientSecret is then empty.
	Broker *Broker
	Now    func() time.Time
	Log    *slog.Logger
}

// Broker is a token broker: it holds the client secret and forwards the
// requests that need it (code exchange, refresh, revocation) to the IdP,
// answering with the IdP's own answer. The sidecar sends it what a public
// client would send the IdP; everything else still goes to the IdP.
type Broker struct {
	// URL is the broker's base URL for this provider, without a trailing
	// slash: tokens go to URL/token, revocations to URL/revoke.
	URL string
	// Client sends the requests and authenticates the sidecar to the
	// broker. It is used for nothing else.
	Client *http.Client
}

// Flow runs logins. It is safe for concurrent use.
type Flow struct {
	cfg      Config
	provider atomic.Pointer[provider]
	// discovered is closed once provider is set.
	discovered   chan struct{}
	discoverOnce sync.Once
	codecs       atomic.Pointer[[]securecookie.Codec]
	clientSecret atomic.Pointer[string]
	used         *usedSet
	origins      []string // scheme://host of each RedirectURLs entry
}

// New returns a Flow. It does no I/O; call Run to discover the provider.
func New(cfg Config) *Flow {
	f := &Flow{cfg: cfg, used: newUsedSet(cfg.Now), discovered: make(chan struct{})}
	for _, u := range cfg.RedirectURLs {
		f.origins = append(f.origins, u.Scheme+"://"+u.Host)
	}
	f.SetCodecs(cfg.Codecs)
	f.SetClientSecret(cfg.ClientSecret)
	return f
}

// SetClientSecret replaces the client secret (a rotated secret file). A
// public client stays public: its empty secret is never replaced.
func (f *Flow) SetClientSecret(secret string) {
	if f.cfg.ClientSecret == "" && f.clientSecret.Load() != nil {
		return
	}
	f.clientSecret.Store(&secret)
}

func (f *Flow) secret() string { return *f.clientSecret.Load() }

// MarkUsed records key until expires in the replica's single-use set. It
// returns ErrUsed when key was already used, ErrBusy when the set is full.
func (f *Flow) MarkUsed(key string, expires time.Time) error { return f.used.add(key, expires) }

// ForgetUsed undoes MarkUsed, for an operation that failed after marking.
func (f *Flow) ForgetUsed(key string) {
	f.used.mu.Lock()
	defer f.used.mu.Unlock()
	delete(f.used.m, key)
}

// markUsed records a state or code as used, in this replica and, with a
// shared store, in all of them, until expires.
func (f *Flow) markUsed(ctx context.Context, kind, value string, expires time.Time) error {
	if err := f.used.add(kind+":"+digest(value), expires); err != nil {
		return err
	}
	if f.cfg.Shared == nil {
		return nil
	}
	fresh, err := f.cfg.Shared.MarkUsed(ctx, kind, value, max(expires.Sub(f.cfg.Now()), time.Second))
	if err != nil {
		return fmt.Errorf("record used %s: %w", kind, err)
	}
	if !fresh {
		return fmt.Errorf("%s: %w on another replica", kind, ErrUsed)
	}
	return nil
}

// RedirectURL returns the registered callback URL for a request's Host. With
// one URL it is always that one; with several, the one whose host equals
// the Host (case-insensitive, port included). It is never derived from the
// request.
func (f *Flow) RedirectURL(host string) (*url.URL, bool) {
	i, ok := f.redirectIndex(host)
	if !ok {
		return nil, false
	}
	return f.cfg.RedirectURLs[i], true
}

func (f *Flow) redirectIndex(host string) (int, bool) {
	if len(f.cfg.RedirectURLs) == 1 {
		return 0, true
	}
	for i, u := range f.cfg.RedirectURLs {
		if strings.EqualFold(u.Host, host) {
			return i, true
		}
	}
	return 0, false
}

// Origin returns the external origin (scheme://host) used for a request's
// Host, for the iss of identity assertions. It is computed once per
// redirect URL, since every proxied request asks.
func (f *Flow) Origin(host string) (string, bool) {
	i, ok := f.redirectIndex(host)
	if !ok {
		return "", false
	}
	return f.origins[i], true
}

func (f *Flow) oauth2Config(p *provider, redirect *url.URL) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     f.cfg.ClientID,
		ClientSecret: f.secret(),
		Endpoint:     p.endpoint,
		RedirectURL:  redirect.String(),
		Scopes:       f.cfg.Scopes,
	}
}

// usedSet remembers consumed states and codes until their login window
// closes, so that a callback can never be replayed against this replica,
// whatever the IdP does with reused codes. It never forgets an entry
// before it expires: when full, it refuses new ones (ErrBusy).
type usedSet struct {
	now func() time.Time
	max int
	mu  sync.Mutex // guards m and earliest
	m   map[string]time.Time
	// earliest is no later than the first expiry in m, so that a full set
	// with nothing expired refuses at once instead of scanning.
	earliest time.Time
}

// maxUsed bounds usedSet: 100,000 logins within one login window.
const maxUsed = 100_000

func newUsedSet(now func() time.Time) *usedSet {
	return &usedSet{now: now, max: maxUsed, m: make(map[string]time.Time)}
}

// add records key until expires. It returns ErrUsed when key is recorded
// and unexpired, and ErrBusy when the set is full of unexpired entries.
func (u *usedSet) add(key string, expires time.Time) error {
	now := u.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if exp, ok := u.m[key]; ok && now.Before(exp) {
		return ErrUsed
	}
	if !u.roomLocked(now) {
		return ErrBusy
	}
	if len(u.m) == 0 || expires.Before(u.earliest) {
		u.earliest = expires
	}
	u.m[key] = expires
	return nil
}

// hasRoom reports whether add could record a new key now.
func (u *usedSet) hasRoom() bool {
	now := u.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.roomLocked(now)
}

// roomLocked makes room by dropping expired entries, when some can have
// expired, and reports whether there is room; u.mu is held.
func (u *usedSet) roomLocked(now time.Time) bool {
	if len(u.m) < u.max {
		return true
	}
	if now.Before(u.earliest) {
		return false
	}
	first := time.Time{}
	for k, exp := range u.m {
		if !now.Before(exp) {
			delete(u.m, k)
		} else if first.IsZero() || exp.Before(first) {
			first = exp
		}
	}
	u.earliest = first
	return len(u.m) < u.max
}
