package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
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
	who := caller{Namespace: "a", ServiceAccount: "app"}

	c.put(key("short"), who, now.Add(time.Minute), now)
	if _, ok := c.get(key("short"), now.Add(time.Minute-time.Nanosecond)); !ok {
		t.Error("entry gone before the token's exp")
	}
	if _, ok := c.get(key("short"), now.Add(time.Minute)); ok {
		t.Error("entry kept at the token's exp")
	}
	if c.len() != 0 {
		t.Errorf("expired entry not dropped: %d entries", c.len())
	}

	c.put(key("long"), who, now.Add(time.Hour), now)
	if _, ok := c.get(key("long"), now.Add(maxCacheAge-time.Nanosecond)); !ok {
		t.Error("entry gone before 10 minutes")
	}
	if _, ok := c.get(key("long"), now.Add(maxCacheAge)); ok {
		t.Error("entry kept past 10 minutes")
	}

	c.put(key("no exp"), who, time.Time{}, now)
	c.put(key("expired"), who, now.Add(-time.Second), now)
	c.put(key("expires now"), who, now, now)
	if c.len() != 0 {
		t.Errorf("tokens without a future exp cached: %d entries", c.len())
	}
}

func TestReviewCacheBounded(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := newReviewCache(3)
	who := caller{Namespace: "a", ServiceAccount: "app"}
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

// fakeReviewer answers TokenReviews with status, or err.
type fakeReviewer struct {
	mu     sync.Mutex
	status authenticationv1.TokenReviewStatus
	err    error
	specs  []authenticationv1.TokenReviewSpec
}

func (f *fakeReviewer) Create(_ context.Context, tr *authenticationv1.TokenReview, _ metav1.CreateOptions) (*authenticationv1.TokenReview, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.specs = append(f.specs, tr.Spec)
	if f.err != nil {
		return nil, f.err
	}
	out := tr.DeepCopy()
	out.Status = f.status
	return out, nil
}

// jwtExpiring is a JWT signed by a throwaway key, as the API server would
// have authenticated it.
func jwtExpiring(t *testing.T, exp time.Time) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(jwt.Claims{Expiry: jwt.NewNumericDate(exp), ID: rand.Text()}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	good := authenticationv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     []string{"gatehouse-broker"},
		User: authenticationv1.UserInfo{
			Username: "system:serviceaccount:shop:app",
			Extra:    map[string]authenticationv1.ExtraValue{podNameExtra: {"app-0"}},
		},
	}
	tests := []struct {
		name   string
		status authenticationv1.TokenReviewStatus
		err    error
		want   caller
		code   int
		result string
	}{
		{name: "a Pod's ServiceAccount", status: good, want: caller{Namespace: "shop", ServiceAccount: "app", Pod: "app-0"}, result: reviewAuthenticated},
		{name: "not authenticated", status: authenticationv1.TokenReviewStatus{Error: "token has expired"}, code: http.StatusUnauthorized, result: reviewRefused},
		{name: "audience not confirmed", status: func() authenticationv1.TokenReviewStatus {
			s := good
			s.Audiences = nil
			return s
		}(), code: http.StatusUnauthorized, result: reviewRefused},
		{name: "another audience", status: func() authenticationv1.TokenReviewStatus {
			s := good
			s.Audiences = []string{"https://kubernetes.default.svc"}
			return s
		}(), code: http.StatusUnauthorized, result: reviewRefused},
		{name: "a person", status: func() authenticationv1.TokenReviewStatus {
			s := good
			s.User = authenticationv1.UserInfo{Username: "jane"}
			return s
		}(), code: http.StatusUnauthorized, result: reviewRefused},
		{name: "API server down", err: errors.New("connection refused"), code: http.StatusServiceUnavailable, result: reviewError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeReviewer{status: tc.status, err: tc.err}
			results := map[string]int{}
			var mu sync.Mutex
			a := &authenticator{
				reviews: f, audience: "gatehouse-broker", now: func() time.Time { return now },
				cache: newReviewCache(10),
				observed: func(r string) {
					mu.Lock()
					defer mu.Unlock()
					results[r]++
				},
			}
			tok := jwtExpiring(t, now.Add(5*time.Minute))
			for range 2 {
				got, err := a.authenticate(t.Context(), tok)
				if got != tc.want || statusOf(err) != tc.code {
					t.Fatalf("authenticate = %+v, %v; want %+v, status %d", got, err, tc.want, tc.code)
				}
			}
			if len(f.specs) == 0 || len(f.specs[0].Audiences) != 1 || f.specs[0].Audiences[0] != "gatehouse-broker" {
				t.Errorf("TokenReview specs %+v, want the broker's audience", f.specs)
			}
			// Successes are reviewed once, then cached; failures never are.
			want := map[string]int{tc.result: 2}
			if tc.result == reviewAuthenticated {
				want = map[string]int{reviewAuthenticated: 1, reviewCached: 1}
			}
			if fmt.Sprint(results) != fmt.Sprint(want) {
				t.Errorf("results %v, want %v", results, want)
			}
		})
	}
}

func TestTokenExpiry(t *testing.T) {
	t.Parallel()
	exp := time.Date(2026, 1, 1, 0, 10, 0, 0, time.UTC)
	if got := tokenExpiry(jwtExpiring(t, exp)); !got.Equal(exp) {
		t.Errorf("tokenExpiry = %v, want %v", got, exp)
	}
	for _, bad := range []string{"", "garbage", "a.b.c", strings.Repeat("x.", 3)} {
		if got := tokenExpiry(bad); !got.IsZero() {
			t.Errorf("tokenExpiry(%q) = %v, want zero", bad, got)
		}
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
