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

// The TokenReview's user extras that name the Pod a projected token is
// bound to; the API server sets them only for tokens bound to a Pod.
const (
	podNameExtra = "authentication.kubernetes.io/pod-name"
	podUIDExtra  = "authentication.kubernetes.io/pod-uid"
)

// serviceAccountPrefix starts the user name of every ServiceAccount
// (system:serviceaccount:<namespace>:<name>).
const serviceAccountPrefix = "system:serviceaccount:"

// Review results, the label "result" of gatehouse_broker_token_reviews_total.
const (
	// reviewCached: a recent successful review reused.
	reviewCached = "cached"
	// reviewAuthenticated: a TokenReview accepted the token.
	reviewAuthenticated = "authenticated"
	// reviewRefused: a TokenReview refused the token, or a refusal of the
	// last refusalCacheAge was reused.
	reviewRefused = "refused"
	// reviewMalformed: refused before any TokenReview, as no
	// ServiceAccount token for the broker (prefilter).
	reviewMalformed = "malformed"
	// reviewThrottled: maxReviewsInFlight TokenReviews were running.
	reviewThrottled = "throttled"
	// reviewError: the TokenReview could not be made.
	reviewError = "error"
)

// Cache and review bounds.
const (
	// maxCacheAge is how long a reviewed token is trusted without asking
	// the API server again, whatever its exp: a deleted ServiceAccount or
	// Pod stops working within this time.
	maxCacheAge = 10 * time.Minute
	// maxCacheEntries bounds the cache's memory: a sidecar's token lives
	// 10 minutes, so this is thousands of Pods' worth.
	maxCacheEntries = 10_000
	// refusalCacheAge is how long a refused token is refused without
	// asking the API server again: a caller repeating a bad token costs
	// one TokenReview a minute, not one per request.
	refusalCacheAge = time.Minute
	// maxRefusalEntries bounds the refusals remembered. They have a cache
	// of their own, so that a flood of bad tokens cannot evict the
	// sidecars' good ones.
	maxRefusalEntries = 10_000
	// maxReviewsInFlight bounds the TokenReviews running at once. A
	// request that would need one more is answered 503 at once rather
	// than queued: a queue would let a flood of distinct tokens delay the
	// sidecars' reviews until they time out.
	maxReviewsInFlight = 32
	// maxTokenLifetime bounds exp − iat of an accepted token. The
	// sidecar's projected token lives 600 seconds; a token someone
	// requested by hand for the broker's audience (kubectl create token
	// --duration 48h) would be a credential that outlives any Pod.
	maxTokenLifetime = time.Hour
)

// reviewTimeout bounds one TokenReview.
const reviewTimeout = 10 * time.Second

// tokenReviewer creates TokenReviews; client-go's TokenReviewInterface
// is one.
type tokenReviewer interface {
	Create(ctx context.Context, review *authenticationv1.TokenReview, opts metav1.CreateOptions) (*authenticationv1.TokenReview, error)
}

// authenticator turns a bearer token into a caller with a TokenReview,
// remembering the answer for as long as the token is valid, and a refusal
// for refusalCacheAge.
type authenticator struct {
	reviews  tokenReviewer
	audience string
	now      func() time.Time
	// accepted and refused are the reviews' answers by the token's
	// SHA-256.
	accepted, refused *reviewCache
	// group joins concurrent reviews of one token, as a sidecar's first
	// requests after a restart arrive together.
	group singleflight.Group
	// inFlight holds a slot per running TokenReview.
	inFlight chan struct{}
	observed func(result string)
}

func newAuthenticator(reviews tokenReviewer, audience string, now func() time.Time, observed func(result string)) *authenticator {
	return &authenticator{
		reviews:  reviews,
		audience: audience,
		now:      now,
		accepted: newReviewCache(maxCacheEntries),
		refused:  newReviewCache(maxRefusalEntries),
		inFlight: make(chan struct{}, maxReviewsInFlight),
		observed: observed,
	}
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

// errThrottled answers a request whose token needs a TokenReview while
// maxReviewsInFlight are running.
var errThrottled = unavailable("the broker is reviewing too many tokens; try again", nil)

// authenticate returns the ServiceAccount token's caller. Only tokens the
// API server authenticated for the broker's audience, of ServiceAccounts,
// bound to a Pod and living at most maxTokenLifetime, pass; refusals wrap
// a 401 refusal, and an API server that cannot be asked, or too many
// reviews at once, a 503 one.
func (a *authenticator) authenticate(ctx context.Context, token string) (caller, error) {
	key := sha256.Sum256([]byte(token))
	now := a.now()
	if c, err, ok := a.cached(key, now); ok {
		return c, err
	}
	claims, err := a.prefilter(token, now)
	if err != nil {
		a.observed(reviewMalformed)
		return caller{}, err
	}
	v, err, _ := a.group.Do(string(key[:]), func() (any, error) {
		// A review of this token that ended since the lookup above has
		// cached its answer: no second review.
		if c, err, ok := a.cached(key, a.now()); ok {
			return c, err
		}
		select {
		case a.inFlight <- struct{}{}:
			defer func() { <-a.inFlight }()
		default:
			a.observed(reviewThrottled)
			return caller{}, errThrottled
		}
		c, err := a.review(ctx, token, claims)
		now := a.now()
		switch {
		case err == nil:
			a.observed(reviewAuthenticated)
			a.accepted.put(key, cacheEntry{caller: c}, cacheUntil(claims.Expiry.Time(), now), now)
		case isRefusal(err, http.StatusServiceUnavailable):
			a.observed(reviewError)
		default:
			a.observed(reviewRefused)
			a.refused.put(key, cacheEntry{err: err}, now.Add(refusalCacheAge), now)
		}
		return c, err
	})
	if err != nil {
		return caller{}, err
	}
	return v.(caller), nil
}

// cached returns the remembered answer for the token whose hash is key,
// and whether there is one.
func (a *authenticator) cached(key [sha256.Size]byte, now time.Time) (caller, error, bool) {
	if e, ok := a.accepted.get(key, now); ok {
		a.observed(reviewCached)
		return e.caller, nil, true
	}
	if e, ok := a.refused.get(key, now); ok {
		a.observed(reviewRefused)
		return caller{}, e.err, true
	}
	return caller{}, nil, false
}

func isRefusal(err error, status int) bool {
	r, ok := errors.AsType[*refusal](err)
	return ok && r.status == status
}

// tokenAlgorithms are the JWS algorithms of ServiceAccount tokens: the API
// server signs with RS256 or ES256, ES384 or ES512 by its key's type, and
// an external signer may use PS256.
var tokenAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.ES384, jose.ES512, jose.PS256}

// errNotForBroker refuses a token the prefilter rules out.
func errNotForBroker(cause string) error {
	return unauthenticated("the token is not a ServiceAccount token for the broker", errors.New(cause))
}

// prefilter refuses, without asking the API server, a token that cannot
// be a ServiceAccount token for the broker at now: one that is not a JWS
// in compact serialization (RFC 7515 7.1) signed with one of
// tokenAlgorithms, or whose claims lack an iss, list no aud that is the
// broker's audience, or lack an exp after now (RFC 7519 4.1.1, 4.1.3,
// 4.1.4). It reads the claims without checking the signature: anyone can
// write a token that passes, so passing proves nothing, and only the
// TokenReview decides whether a token is trusted. The refusals' causes
// are fixed text, never what the token holds.
func (a *authenticator) prefilter(token string, now time.Time) (jwt.Claims, error) {
	tok, err := jwt.ParseSigned(token, tokenAlgorithms)
	if err != nil {
		return jwt.Claims{}, errNotForBroker("not a JWS in compact form with an algorithm Kubernetes signs with")
	}
	var claims jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&claims); err != nil {
		return jwt.Claims{}, errNotForBroker("its claims do not parse")
	}
	switch {
	case claims.Issuer == "":
		return jwt.Claims{}, errNotForBroker("no iss")
	case !claims.Audience.Contains(a.audience):
		return jwt.Claims{}, errNotForBroker("aud lacks the broker's audience")
	case claims.Expiry == nil:
		return jwt.Claims{}, errNotForBroker("no exp")
	case !now.Before(claims.Expiry.Time()):
		return jwt.Claims{}, errNotForBroker("expired")
	}
	return claims, nil
}

// review asks the API server about token, whose unverified claims the
// prefilter read, and checks what the TokenReview says of it.
func (a *authenticator) review(ctx context.Context, token string, claims jwt.Claims) (caller, error) {
	// Callers waiting on this review share it: one leaving early must not
	// fail it for the others.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reviewTimeout)
	defer cancel()
	tr, err := a.reviews.Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{a.audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return caller{}, unavailable("the API server could not review the token", err)
	}
	st := tr.Status
	if !st.Authenticated {
		var cause error
		if st.Error != "" {
			cause = errors.New(st.Error)
		}
		return caller{}, unauthenticated("the token is not valid", cause)
	}
	// The TokenReview API: a client that sets spec.audiences must check
	// that status.audiences holds one of them, or an authenticator that
	// ignores audiences would admit a token made for someone else.
	if !slices.Contains(st.Audiences, a.audience) {
		return caller{}, unauthenticated("the token is not for the broker's audience", nil)
	}
	c, err := serviceAccount(st.User.Username)
	if err != nil {
		return caller{}, unauthenticated("the token is not a ServiceAccount's", err)
	}
	// A sidecar shows its Pod's projected token, which the kubelet asks
	// bound to the Pod; a token bound to nothing was requested by someone
	// with the TokenRequest permission, outside any Pod.
	pods, uids := st.User.Extra[podNameExtra], st.User.Extra[podUIDExtra]
	if len(pods) != 1 || pods[0] == "" || len(uids) != 1 || uids[0] == "" {
		return caller{}, unauthenticated("the token is not bound to a Pod", nil)
	}
	c.Pod = pods[0]
	// The API server has authenticated these very bytes, so their claims
	// are its own now: RFC 7519 4.1.4 exp and 4.1.6 iat.
	if claims.IssuedAt == nil {
		return caller{}, unauthenticated("the token has no iat", nil)
	}
	if life := claims.Expiry.Time().Sub(claims.IssuedAt.Time()); life > maxTokenLifetime {
		return caller{}, unauthenticated("the token lives longer than an hour", fmt.Errorf("exp - iat is %s", life))
	}
	return c, nil
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

// reviewCache remembers answers of TokenReviews by the SHA-256 of the
// token, never the token itself, each until a time put is given. It holds
// at most max entries: when full, expired entries go first, then the
// oldest.
type reviewCache struct {
	max int

	mu      sync.Mutex // guards the fields below
	entries map[[sha256.Size]byte]*list.Element
	order   *list.List // of *cacheEntry, oldest first
}

// cacheEntry is one answer: the caller of an accepted token, or the
// refusal of a refused one.
type cacheEntry struct {
	caller caller
	err    error

	key     [sha256.Size]byte
	expires time.Time
}

func newReviewCache(maxEntries int) *reviewCache {
	return &reviewCache{max: maxEntries, entries: map[[sha256.Size]byte]*list.Element{}, order: list.New()}
}

// cacheUntil is when a successful review at now of a token expiring at
// exp stops being reused: exp, capped at maxCacheAge.
func cacheUntil(exp, now time.Time) time.Time {
	return minTime(exp, now.Add(maxCacheAge))
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// get returns a cached, unexpired answer; an expired entry is dropped.
func (c *reviewCache) get(key [sha256.Size]byte, now time.Time) (cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		return cacheEntry{}, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.remove(el)
		return cacheEntry{}, false
	}
	return *e, true
}

// put caches, at now, the answer e for the token whose hash is key until
// until; an answer already expired at now is not cached.
func (c *reviewCache) put(key [sha256.Size]byte, e cacheEntry, until, now time.Time) {
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
	e.key, e.expires = key, until
	c.entries[key] = c.order.PushBack(&e)
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
