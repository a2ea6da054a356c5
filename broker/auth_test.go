package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func key(s string) [sha256.Size]byte { return sha256.Sum256([]byte(s)) }

func TestReviewCacheExpiry(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := newReviewCache(10)
	who := cacheEntry{caller: caller{Namespace: "a", ServiceAccount: "app"}}

	c.put(key("short"), who, cacheUntil(now.Add(time.Minute), now), now)
	if _, ok := c.get(key("short"), now.Add(time.Minute-time.Nanosecond)); !ok {
		t.Error("entry gone before the token's exp")
	}
	if _, ok := c.get(key("short"), now.Add(time.Minute)); ok {
		t.Error("entry kept at the token's exp")
	}
	if c.len() != 0 {
		t.Errorf("expired entry not dropped: %d entries", c.len())
	}

	c.put(key("long"), who, cacheUntil(now.Add(time.Hour), now), now)
	if _, ok := c.get(key("long"), now.Add(maxCacheAge-time.Nanosecond)); !ok {
		t.Error("entry gone before 10 minutes")
	}
	if _, ok := c.get(key("long"), now.Add(maxCacheAge)); ok {
		t.Error("entry kept past 10 minutes")
	}

	c.put(key("expired"), who, cacheUntil(now.Add(-time.Second), now), now)
	c.put(key("expires now"), who, cacheUntil(now, now), now)
	if c.len() != 0 {
		t.Errorf("tokens without a future exp cached: %d entries", c.len())
	}
}

func TestReviewCacheBounded(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := newReviewCache(3)
	who := cacheEntry{caller: caller{Namespace: "a", ServiceAccount: "app"}}
	c.put(key("1"), who, now.Add(time.Minute), now)
	c.put(key("2"), who, now.Add(time.Second), now)
	c.put(key("3"), who, now.Add(time.Minute), now)
	// Full: the expired entry (2) goes first, though 1 is older.
	later := now.Add(2 * time.Second)
	c.put(key("4"), who, now.Add(time.Minute), later)
	for k, want := range map[string]bool{"1": true, "2": false, "3": true, "4": true} {
		if _, ok := c.get(key(k), later); ok != want {
			t.Errorf("entry %s cached %v, want %v", k, ok, want)
		}
	}
	// Full of live entries: the oldest goes.
	c.put(key("5"), who, now.Add(time.Minute), later)
	for k, want := range map[string]bool{"1": false, "3": true, "4": true, "5": true} {
		if _, ok := c.get(key(k), later); ok != want {
			t.Errorf("entry %s cached %v, want %v", k, ok, want)
		}
	}
	if c.len() != 3 {
		t.Errorf("%d entries, want at most 3", c.len())
	}
	// Putting a cached token again does not duplicate it.
	c.put(key("5"), who, now.Add(time.Minute), later)
	if c.len() != 3 {
		t.Errorf("%d entries after a repeated put, want 3", c.len())
	}
}

func TestServiceAccount(t *testing.T) {
	t.Parallel()
	tests := []struct {
		username string
		want     caller
		ok       bool
	}{
		{"system:serviceaccount:shop:app", caller{Namespace: "shop", ServiceAccount: "app"}, true},
		{"system:serviceaccount:shop", caller{}, false},
		{"system:serviceaccount::app", caller{}, false},
		{"system:serviceaccount:shop:", caller{}, false},
		{"system:serviceaccount:shop:app:extra", caller{}, false},
		{"system:serviceaccount:Shop:app", caller{}, false},
		{"jane", caller{}, false},
		{"shop:app", caller{}, false},
		{"system:node:n1", caller{}, false},
		{"system:serviceaccounts:shop:app", caller{}, false},
	}
	for _, tc := range tests {
		got, err := serviceAccount(tc.username)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("serviceAccount(%q) = %+v, %v; want %+v, ok %v", tc.username, got, err, tc.want, tc.ok)
		}
	}
}

// fakeReviewer answers TokenReviews with status, or err. With gate set,
// each review first says so on started, then waits for gate to close.
type fakeReviewer struct {
	mu      sync.Mutex
	status  authenticationv1.TokenReviewStatus
	err     error
	specs   []authenticationv1.TokenReviewSpec
	gate    chan struct{}
	started chan struct{}
}

func (f *fakeReviewer) Create(_ context.Context, tr *authenticationv1.TokenReview, _ metav1.CreateOptions) (*authenticationv1.TokenReview, error) {
	f.mu.Lock()
	f.specs = append(f.specs, tr.Spec)
	gate, started := f.gate, f.started
	f.mu.Unlock()
	if gate != nil {
		started <- struct{}{}
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	out := tr.DeepCopy()
	out.Status = f.status
	return out, nil
}

// set changes the review's answer.
func (f *fakeReviewer) set(status authenticationv1.TokenReviewStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = status
}

func (f *fakeReviewer) reviews() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.specs)
}

// results counts an authenticator's observed results.
type results struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *results) observe(result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[result]++
}

func (r *results) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprint(r.n)
}

// testClaims are a projected token's registered claims as the API server
// writes them, issued at now for 10 minutes.
func testClaims(now time.Time) jwt.Claims {
	return jwt.Claims{
		Issuer:   "https://kubernetes.default.svc.cluster.local",
		Subject:  "system:serviceaccount:shop:app",
		Audience: jwt.Audience{"gatehouse-broker"},
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(10 * time.Minute)),
		ID:       rand.Text(),
	}
}

// signJWT signs claims with a throwaway key: the fake reviewer plays the
// API server that would check the signature.
func signJWT(t *testing.T, claims jwt.Claims) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signWith(t, jose.ES256, k, claims)
}

func signWith(t *testing.T, alg jose.SignatureAlgorithm, key any, claims jwt.Claims) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// goodReview is the TokenReview status of a sidecar's projected token.
func goodReview() authenticationv1.TokenReviewStatus {
	return authenticationv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     []string{"gatehouse-broker"},
		User: authenticationv1.UserInfo{
			Username: "system:serviceaccount:shop:app",
			Extra: map[string]authenticationv1.ExtraValue{
				podNameExtra: {"app-0"},
				podUIDExtra:  {"0b4e7c57-2d58-4d1a-9d3c-0e4c1f6d1a11"},
			},
		},
	}
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	withStatus := func(change func(*authenticationv1.TokenReviewStatus)) authenticationv1.TokenReviewStatus {
		s := goodReview()
		change(&s)
		return s
	}
	app0 := caller{Namespace: "shop", ServiceAccount: "app", Pod: "app-0"}
	tests := []struct {
		name   string
		status authenticationv1.TokenReviewStatus
		err    error
		// claims changes the token's claims from testClaims.
		claims func(*jwt.Claims)
		want   caller
		code   int
		result string
	}{
		{name: "a Pod's ServiceAccount", status: goodReview(), want: app0, result: reviewAuthenticated},
		{name: "a token that lives an hour", status: goodReview(), claims: func(c *jwt.Claims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(-50 * time.Minute))
		}, want: app0, result: reviewAuthenticated},
		{name: "not authenticated", status: authenticationv1.TokenReviewStatus{Error: "token has expired"}, code: http.StatusUnauthorized, result: reviewRefused},
		{name: "audience not confirmed", status: withStatus(func(s *authenticationv1.TokenReviewStatus) { s.Audiences = nil }), code: http.StatusUnauthorized, result: reviewRefused},
		{name: "another audience", status: withStatus(func(s *authenticationv1.TokenReviewStatus) {
			s.Audiences = []string{"https://kubernetes.default.svc"}
		}), code: http.StatusUnauthorized, result: reviewRefused},
		{name: "a person", status: withStatus(func(s *authenticationv1.TokenReviewStatus) {
			s.User = authenticationv1.UserInfo{Username: "jane", Extra: s.User.Extra}
		}), code: http.StatusUnauthorized, result: reviewRefused},
		{name: "not bound to a Pod", status: withStatus(func(s *authenticationv1.TokenReviewStatus) { s.User.Extra = nil }), code: http.StatusUnauthorized, result: reviewRefused},
		{name: "a Pod name without its uid", status: withStatus(func(s *authenticationv1.TokenReviewStatus) {
			s.User.Extra = map[string]authenticationv1.ExtraValue{podNameExtra: {"app-0"}}
		}), code: http.StatusUnauthorized, result: reviewRefused},
		{name: "bound to a Secret", status: withStatus(func(s *authenticationv1.TokenReviewStatus) {
			s.User.Extra = map[string]authenticationv1.ExtraValue{"authentication.kubernetes.io/credential-id": {"JTI=x"}}
		}), code: http.StatusUnauthorized, result: reviewRefused},
		{name: "a token that lives two days", status: goodReview(), claims: func(c *jwt.Claims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(-48*time.Hour + 5*time.Minute))
			c.Expiry = jwt.NewNumericDate(now.Add(5 * time.Minute))
		}, code: http.StatusUnauthorized, result: reviewRefused},
		{name: "a token that lives an hour and a second", status: goodReview(), claims: func(c *jwt.Claims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(-time.Hour - time.Second + 10*time.Minute))
		}, code: http.StatusUnauthorized, result: reviewRefused},
		{name: "no iat", status: goodReview(), claims: func(c *jwt.Claims) { c.IssuedAt = nil }, code: http.StatusUnauthorized, result: reviewRefused},
		{name: "API server down", err: errors.New("connection refused"), code: http.StatusServiceUnavailable, result: reviewError},
	}
	wantCode := map[int]string{http.StatusUnauthorized: "invalid_token", http.StatusServiceUnavailable: "temporarily_unavailable"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeReviewer{status: tc.status, err: tc.err}
			var res results
			a := newAuthenticator(f, "gatehouse-broker", func() time.Time { return now }, res.observe)
			claims := testClaims(now)
			if tc.claims != nil {
				tc.claims(&claims)
			}
			tok := signJWT(t, claims)
			for range 2 {
				got, err := a.authenticate(t.Context(), tok)
				if got != tc.want || statusOf(err) != tc.code {
					t.Fatalf("authenticate = %+v, %v; want %+v, status %d", got, err, tc.want, tc.code)
				}
				if err != nil && codeOf(err) != wantCode[tc.code] {
					t.Errorf("error code %q, want %q", codeOf(err), wantCode[tc.code])
				}
			}
			if len(f.specs) == 0 || len(f.specs[0].Audiences) != 1 || f.specs[0].Audiences[0] != "gatehouse-broker" || f.specs[0].Token != tok {
				t.Errorf("TokenReview specs %+v, want the token with the broker's audience", f.specs)
			}
			// An answer is reviewed once, then reused: a success as
			// cached, a refusal as refused again. An API server that could
			// not be asked is asked again.
			want, wantReviews := map[string]int{tc.result: 2}, 1
			switch tc.result {
			case reviewAuthenticated:
				want = map[string]int{reviewAuthenticated: 1, reviewCached: 1}
			case reviewError:
				wantReviews = 2
			}
			if res.String() != fmt.Sprint(want) || len(f.specs) != wantReviews {
				t.Errorf("results %v after %d TokenReviews, want %v after %d", res.String(), len(f.specs), want, wantReviews)
			}
		})
	}
}

// TestPrefilter: a bearer that cannot be a ServiceAccount token for the
// broker costs no TokenReview, whatever the API server would say.
func TestPrefilter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	with := func(change func(*jwt.Claims)) string {
		c := testClaims(now)
		change(&c)
		return signJWT(t, c)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	claimsJSON, err := json.Marshal(testClaims(now))
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	tests := []struct {
		name, token string
		pass        bool
	}{
		{"a projected token", signJWT(t, testClaims(now)), true},
		{"the audience among others", with(func(c *jwt.Claims) { c.Audience = jwt.Audience{"vault", "gatehouse-broker"} }), true},
		{"ES384", signWith(t, jose.ES384, p384, testClaims(now)), true},

		{"garbage", "garbage", false},
		{"three dots", "a.b.c", false},
		{"a person's static token", staticToken, false},
		{"HMAC", signWith(t, jose.HS256, []byte(strings.Repeat("k", 32)), testClaims(now)), false},
		{"alg none", b64([]byte(`{"alg":"none"}`)) + "." + b64(claimsJSON) + ".", false},
		{"JWE", strings.Repeat("eyJhbGciOiJkaXIiLCJlbmMiOiJBMTI4R0NNIn0.", 4) + "x", false},
		{"claims not JSON", func() string {
			parts := strings.Split(signJWT(t, testClaims(now)), ".")
			return parts[0] + "." + b64([]byte("not json")) + "." + parts[2]
		}(), false},
		{"no iss", with(func(c *jwt.Claims) { c.Issuer = "" }), false},
		{"no aud", with(func(c *jwt.Claims) { c.Audience = nil }), false},
		{"another aud", with(func(c *jwt.Claims) { c.Audience = jwt.Audience{"https://kubernetes.default.svc"} }), false},
		{"no exp", with(func(c *jwt.Claims) { c.Expiry = nil }), false},
		{"exp now", with(func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(now) }), false},
		{"expired", with(func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(now.Add(-time.Minute)) }), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeReviewer{status: goodReview()}
			var res results
			a := newAuthenticator(f, "gatehouse-broker", func() time.Time { return now }, res.observe)
			_, err := a.authenticate(t.Context(), tc.token)
			if tc.pass {
				if err != nil || f.reviews() != 1 {
					t.Errorf("authenticate: %v after %d TokenReviews; want accepted by a TokenReview", err, f.reviews())
				}
				return
			}
			if statusOf(err) != http.StatusUnauthorized || codeOf(err) != "invalid_token" {
				t.Errorf("authenticate: %v, want 401 invalid_token", err)
			}
			if want := fmt.Sprint(map[string]int{reviewMalformed: 1}); f.reviews() != 0 || res.String() != want {
				t.Errorf("%d TokenReviews, results %v; want none, %v", f.reviews(), res.String(), want)
			}
		})
	}
}

// TestRefusalCached: a refused token is refused again without a TokenReview
// for refusalCacheAge, then reviewed again; refusals, however many, never
// push the accepted tokens out of their cache.
func TestRefusalCached(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := &fakeClock{t: now}
	forgedStatus := authenticationv1.TokenReviewStatus{Error: "invalid signature"}
	f := &fakeReviewer{status: forgedStatus}
	var res results
	a := newAuthenticator(f, "gatehouse-broker", clock.Now, res.observe)
	forged := signJWT(t, testClaims(now))
	refused := func(wantReviews int) {
		t.Helper()
		if _, err := a.authenticate(t.Context(), forged); statusOf(err) != http.StatusUnauthorized {
			t.Fatalf("authenticate: %v, want 401", err)
		}
		if f.reviews() != wantReviews {
			t.Fatalf("%d TokenReviews, want %d", f.reviews(), wantReviews)
		}
	}
	refused(1)
	clock.Set(now.Add(refusalCacheAge - time.Second))
	refused(1)
	clock.Set(now.Add(refusalCacheAge))
	refused(2)
	if want := fmt.Sprint(map[string]int{reviewRefused: 3}); res.String() != want {
		t.Errorf("results %v, want %v", res.String(), want)
	}

	a.refused = newReviewCache(2)
	f.set(goodReview())
	good := signJWT(t, testClaims(clock.Now()))
	if _, err := a.authenticate(t.Context(), good); err != nil {
		t.Fatal(err)
	}
	f.set(forgedStatus)
	for range 5 {
		if _, err := a.authenticate(t.Context(), signJWT(t, testClaims(clock.Now()))); statusOf(err) != http.StatusUnauthorized {
			t.Fatalf("a forged token: %v, want 401", err)
		}
	}
	before := f.reviews()
	if _, err := a.authenticate(t.Context(), good); err != nil || f.reviews() != before {
		t.Errorf("the accepted token after 5 refusals: %v after %d more TokenReviews; want it still cached", err, f.reviews()-before)
	}
	if a.refused.len() != 2 {
		t.Errorf("%d refusals cached, want the cache's bound, 2", a.refused.len())
	}
}

// TestReviewsInFlightBounded: with maxReviewsInFlight TokenReviews running,
// a token that needs one more is answered 503 at once rather than queued;
// callers of a token already under review share its review.
func TestReviewsInFlightBounded(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// started has room for a review too many, which the count below
	// reports rather than hanging on.
	f := &fakeReviewer{status: goodReview(), gate: make(chan struct{}), started: make(chan struct{}, 3*maxReviewsInFlight)}
	var res results
	a := newAuthenticator(f, "gatehouse-broker", func() time.Time { return now }, res.observe)
	tokens := make([]string, maxReviewsInFlight)
	errs := make(chan error, 2*maxReviewsInFlight)
	authenticate := func(tok string) {
		_, err := a.authenticate(t.Context(), tok)
		errs <- err
	}
	for i := range tokens {
		tokens[i] = signJWT(t, testClaims(now))
		go authenticate(tokens[i])
	}
	for range maxReviewsInFlight {
		<-f.started
	}
	// One token more: answered at once, or, were it let through, its
	// review would start and wait on the gate.
	beyond := make(chan error, 1)
	go func() {
		_, err := a.authenticate(t.Context(), signJWT(t, testClaims(now)))
		beyond <- err
	}()
	select {
	case err := <-beyond:
		if statusOf(err) != http.StatusServiceUnavailable || codeOf(err) != "temporarily_unavailable" {
			t.Errorf("a token beyond %d reviews in flight: %v, want 503 temporarily_unavailable", maxReviewsInFlight, err)
		}
	case <-f.started:
		close(f.gate)
		t.Fatalf("a TokenReview beyond %d in flight started", maxReviewsInFlight)
	}
	// The same tokens again: joined to their running reviews, or answered
	// from the cache once those are done; never reviewed again.
	for _, tok := range tokens {
		go authenticate(tok)
	}
	close(f.gate)
	for range 2 * maxReviewsInFlight {
		if err := <-errs; err != nil {
			t.Errorf("a token under review: %v", err)
		}
	}
	if n := f.reviews(); n != maxReviewsInFlight {
		t.Errorf("%d TokenReviews, want %d: one per token", n, maxReviewsInFlight)
	}
	// The slots are free again.
	f.mu.Lock()
	f.gate = nil
	f.mu.Unlock()
	if _, err := a.authenticate(t.Context(), signJWT(t, testClaims(now))); err != nil {
		t.Errorf("after the reviews finished: %v", err)
	}
	if !strings.Contains(res.String(), reviewThrottled+":1") {
		t.Errorf("results %v, want one throttled", res.String())
	}
}

func TestBearerToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		header, want string
		ok           bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer abc", "abc", true},
		{"Bearer  abc ", "abc", true},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Basic abc", "", false},
		{"", "", false},
	}
	for _, tc := range tests {
		r, _ := http.NewRequest(http.MethodPost, "/", nil)
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		got, ok := bearerToken(r)
		if got != tc.want || ok != tc.ok {
			t.Errorf("bearerToken(%q) = %q, %v; want %q, %v", tc.header, got, ok, tc.want, tc.ok)
		}
	}
}
