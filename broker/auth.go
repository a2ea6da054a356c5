package broker

import (
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/sync/singleflight"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// caller is who a request comes from: a Kubernetes ServiceAccount, and the
// Pod its token is bound to when it is.
type caller struct {
	Namespace      string
	ServiceAccount string
	Pod            string
}

// podNameExtra is the TokenReview's user extra that names the Pod a
// projected token is bound to.
const podNameExtra = "authentication.kubernetes.io/pod-name"

// serviceAccountPrefix starts the user name of every ServiceAccount
// (system:serviceaccount:<namespace>:<name>).
const serviceAccountPrefix = "system:serviceaccount:"

// Review results, the label "result" of gatehouse_broker_token_reviews_total.
const (
	reviewCached        = "cached"
	reviewAuthenticated = "authenticated"
	reviewRefused       = "refused"
	reviewError         = "error"
)

// Cache bounds.
const (
	// maxCacheAge is how long a reviewed token is trusted without asking
	// the API server again, whatever its exp: a deleted ServiceAccount or
	// Pod stops working within this time.
	maxCacheAge = 10 * time.Minute
	// maxCacheEntries bounds the cache's memory: a sidecar's token lives
	// 10 minutes, so this is thousands of Pods' worth.
	maxCacheEntries = 10_000
)

// reviewTimeout bounds one TokenReview.
const reviewTimeout = 10 * time.Second

// tokenReviewer creates TokenReviews; client-go's TokenReviewInterface
// is one.
type tokenReviewer interface {
	Create(ctx context.Context, review *authenticationv1.TokenReview, opts metav1.CreateOptions) (*authenticationv1.TokenReview, error)
}

// authenticator turns a bearer token into a caller with a TokenReview,
// remembering the answer for as long as the token is valid.
type authenticator struct {
	reviews  tokenReviewer
	audience string
	now      func() time.Time
	cache    *reviewCache
	// group joins concurrent reviews of one token, as a sidecar's first
	// requests after a restart arrive together.
	group    singleflight.Group
	observed func(result string)
}

// bearerToken returns the token of an "Authorization: Bearer" header (RFC
// 6750 2.1; the scheme is case-insensitive, RFC 9110 11.1).
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// authenticate returns the ServiceAccount token's caller. Only tokens the
// API server authenticated for the broker's audience, of ServiceAccounts,
// pass; refusals wrap a 401 refusal, and an API server that cannot be
// asked a 503 one.
func (a *authenticator) authenticate(ctx context.Context, token string) (caller, error) {
	key := sha256.Sum256([]byte(token))
	if c, ok := a.cache.get(key, a.now()); ok {
		a.observed(reviewCached)
		return c, nil
	}
	v, err, _ := a.group.Do(string(key[:]), func() (any, error) {
		c, exp, err := a.review(ctx, token)
		switch {
		case err == nil:
			a.observed(reviewAuthenticated)
			a.cache.put(key, c, exp, a.now())
		case isRefusal(err, http.StatusServiceUnavailable):
			a.observed(reviewError)
		default:
			a.observed(reviewRefused)
		}
		return c, err
	})
	if err != nil {
		return caller{}, err
	}
	return v.(caller), nil
}

func isRefusal(err error, status int) bool {
	r, ok := errors.AsType[*refusal](err)
	return ok && r.status == status
}

// review asks the API server about token. It returns the caller and the
// time until which the answer may be reused (zero: not at all).
func (a *authenticator) review(ctx context.Context, token string) (caller, time.Time, error) {
	// Callers waiting on this review share it: one leaving early must not
	// fail it for the others.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reviewTimeout)
	defer cancel()
	tr, err := a.reviews.Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{a.audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return caller{}, time.Time{}, unavailable("the API server could not review the token", err)
	}
	st := tr.Status
	if !st.Authenticated {
		var cause error
		if st.Error != "" {
			cause = errors.New(st.Error)
		}
		return caller{}, time.Time{}, unauthenticated("the token is not valid", cause)
	}
	// The TokenReview API: a client that sets spec.audiences must check
	// that status.audiences holds one of them, or an authenticator that
	// ignores audiences would admit a token made for someone else.
	if !slices.Contains(st.Audiences, a.audience) {
		return caller{}, time.Time{}, unauthenticated("the token is not for the broker's audience", nil)
	}
	c, err := serviceAccount(st.User.Username)
	if err != nil {
		return caller{}, time.Time{}, unauthenticated("the token is not a ServiceAccount's", err)
	}
	if pods := st.User.Extra[podNameExtra]; len(pods) == 1 {
		c.Pod = pods[0]
	}
	return c, tokenExpiry(token), nil
}

// serviceAccount reads a ServiceAccount user name,
// system:serviceaccount:<namespace>:<name>.
func serviceAccount(username string) (caller, error) {
	rest, ok := strings.CutPrefix(username, serviceAccountPrefix)
	if !ok {
		return caller{}, errors.New("not a ServiceAccount user name")
	}
	ns, name, ok := strings.Cut(rest, ":")
	if !ok || len(validation.IsDNS1123Label(ns)) > 0 || name == "" || strings.Contains(name, ":") {
		return caller{}, fmt.Errorf("malformed ServiceAccount user name")
	}
	return caller{Namespace: ns, ServiceAccount: name}, nil
}

// tokenAlgorithms are the signature algorithms a ServiceAccount token may
// carry; the API server has already verified the signature, so the list
// only lets go-jose parse the token.
var tokenAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// tokenExpiry returns a token's exp, or the zero time when it has none
// that can be read. It reads the claims without checking the signature,
// so it may be called only on a token the API server has just
// authenticated: it bounds how long the API server's answer is reused,
// never whether the token is trusted.
func tokenExpiry(token string) time.Time {
	tok, err := jwt.ParseSigned(token, tokenAlgorithms)
	if err != nil {
		return time.Time{}
	}
	var claims jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&claims); err != nil || claims.Expiry == nil {
		return time.Time{}
	}
	return claims.Expiry.Time()
}

// reviewCache remembers the callers of reviewed tokens by the SHA-256 of
// the token, never the token itself, each until the token's exp but at most
// maxCacheAge. It holds at most max entries: when full, expired entries go
// first, then the oldest. Only successes are cached.
type reviewCache struct {
	max int

	mu      sync.Mutex // guards the fields below
	entries map[[sha256.Size]byte]*list.Element
	order   *list.List // of *cacheEntry, oldest first
}

type cacheEntry struct {
	key     [sha256.Size]byte
	caller  caller
	expires time.Time
}

func newReviewCache(maxEntries int) *reviewCache {
	return &reviewCache{max: maxEntries, entries: map[[sha256.Size]byte]*list.Element{}, order: list.New()}
}

// cacheUntil is when a review at now of a token expiring at exp stops
// being reused: exp, capped at maxCacheAge; the zero time for a token
// without exp, which is not cached.
func cacheUntil(exp, now time.Time) time.Time {
	if exp.IsZero() {
		return time.Time{}
	}
	return minTime(exp, now.Add(maxCacheAge))
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// get returns the caller of a cached, unexpired token; an expired entry is
// dropped.
func (c *reviewCache) get(key [sha256.Size]byte, now time.Time) (caller, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		return caller{}, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.remove(el)
		return caller{}, false
	}
	return e.caller, true
}

// put caches a token reviewed at now whose exp is exp.
func (c *reviewCache) put(key [sha256.Size]byte, who caller, exp, now time.Time) {
	until := cacheUntil(exp, now)
	if !now.Before(until) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		c.remove(el)
	}
	if len(c.entries) >= c.max {
		for el := c.order.Front(); el != nil; {
			next := el.Next()
			if !now.Before(el.Value.(*cacheEntry).expires) {
				c.remove(el)
			}
			el = next
		}
	}
	for len(c.entries) >= c.max {
		c.remove(c.order.Front())
	}
	c.entries[key] = c.order.PushBack(&cacheEntry{key: key, caller: who, expires: until})
}

// len returns the number of entries, expired or not.
func (c *reviewCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// remove drops el; c.mu is held.
func (c *reviewCache) remove(el *list.Element) {
	delete(c.entries, el.Value.(*cacheEntry).key)
	c.order.Remove(el)
}
