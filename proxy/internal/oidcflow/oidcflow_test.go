package oidcflow

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"

	"github.com/gatehouse-dev/gatehouse/proxy/idptest"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session/cookiestore"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newFlow(t *testing.T, idp *idptest.Provider, clk *clock, redirects ...string) *Flow {
	t.Helper()
	f := newUndiscoveredFlow(t, idp, clk, redirects...)
	p, err := f.discover(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	f.setProvider(p)
	return f
}

func newUndiscoveredFlow(t *testing.T, idp *idptest.Provider, clk *clock, redirects ...string) *Flow {
	t.Helper()
	codecs, err := cookiestore.Codecs([][]byte{[]byte(strings.Repeat("x", 32))}, LoginWindow)
	if err != nil {
		t.Fatal(err)
	}
	var urls []*url.URL
	for _, r := range redirects {
		u, _ := url.Parse(r)
		urls = append(urls, u)
	}
	f := New(Config{
		IssuerURL: idp.URL, ClientID: idp.ClientID, ClientSecret: idp.ClientSecret,
		Scopes: []string{"openid"}, RedirectURLs: urls, GroupsClaim: "groups",
		CookieName: "gh", Codecs: codecs, SessionLifetime: time.Hour,
		HTTPClient: idp.Client(), Now: clk.now, Log: slog.New(slog.DiscardHandler),
	})
	return f
}

// startAndAuthorize runs Start and the IdP's authorize step, returning the
// callback request with the login cookie.
func startAndAuthorize(t *testing.T, f *Flow, idp *idptest.Provider) *http.Request {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := f.Start(rec, httptest.NewRequest(http.MethodGet, "https://app.example/x", nil), "/x"); err != nil {
		t.Fatal(err)
	}
	resp := rec.Result()
	noFollow := *idp.Client() // a copy: the IdP's client is shared
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	authResp, err := noFollow.Get(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	authResp.Body.Close()
	cb := httptest.NewRequest(http.MethodGet, authResp.Header.Get("Location"), nil)
	for _, c := range resp.Cookies() {
		cb.AddCookie(c)
	}
	return cb
}

func TestLoginWindow(t *testing.T) {
	t.Parallel()
	idp := idptest.New(t)
	for _, tc := range []struct {
		name    string
		wait    time.Duration
		wantErr error
	}{
		{"within the window", 9 * time.Minute, nil},
		{"after the window", 10*time.Minute + time.Second, ErrLoginState},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clk := &clock{t: time.Now()}
			f := newFlow(t, idp, clk, "https://app.example/_gatehouse/callback")
			cb := startAndAuthorize(t, f, idp)
			clk.advance(tc.wait)
			// The IdP's tokens are minted on its own (real) clock.
			_, rd, err := f.Callback(httptest.NewRecorder(), cb)
			if !errors.Is(err, tc.wantErr) && (tc.wantErr != nil || err != nil) {
				t.Fatalf("Callback after %v: %v, want %v", tc.wait, err, tc.wantErr)
			}
			if rd != "/x" {
				t.Errorf("return path %q, want /x", rd)
			}
		})
	}
}

func TestRedirectURLChoice(t *testing.T) {
	t.Parallel()
	idp := idptest.New(t)
	single := newFlow(t, idp, &clock{t: time.Now()}, "https://app.example/cb")
	if u, ok := single.RedirectURL("anything.example"); !ok || u.Host != "app.example" {
		t.Errorf("single URL: %v %v", u, ok)
	}
	multi := newFlow(t, idp, &clock{t: time.Now()}, "https://a.example/cb", "https://b.example:8443/cb")
	for host, want := range map[string]string{"a.example": "a.example", "A.EXAMPLE": "a.example", "b.example:8443": "b.example:8443", "b.example": "", "evil.example": "", "a.example:443": ""} {
		u, ok := multi.RedirectURL(host)
		got := ""
		if ok {
			got = u.Host
		}
		if got != want {
			t.Errorf("RedirectURL(%q) = %q, want %q", host, got, want)
		}
	}
}

func TestClaimParsing(t *testing.T) {
	t.Parallel()
	raw := func(s string) map[string]json.RawMessage {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, tc := range []struct {
		claims       string
		wantVerified bool
		wantGroups   []string
	}{
		{`{}`, true, nil},
		{`{"email_verified":true,"groups":["a","b"]}`, true, []string{"a", "b"}},
		{`{"email_verified":false,"groups":"solo"}`, false, []string{"solo"}},
		{`{"email_verified":"false","groups":["a",""]}`, false, []string{"a"}},
		{`{"email_verified":"true","groups":42}`, true, nil},
		{`{"email_verified":null}`, false, nil},
	} {
		c := raw(tc.claims)
		if got := verified(c); got != tc.wantVerified {
			t.Errorf("verified(%s) = %v", tc.claims, got)
		}
		if got := groups(c["groups"]); !cmp.Equal(got, tc.wantGroups) {
			t.Errorf("groups(%s) = %v, want %v", tc.claims, got, tc.wantGroups)
		}
	}
}

func TestUsedSet(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Now()}
	u := newUsedSet(clk.now)
	if err := u.add("k", clk.now().Add(time.Minute)); err != nil {
		t.Fatalf("first add: %v", err)
	}
	if err := u.add("k", clk.now().Add(time.Minute)); !errors.Is(err, ErrUsed) {
		t.Fatalf("second add: %v, want ErrUsed", err)
	}
	clk.advance(2 * time.Minute)
	if err := u.add("k", clk.now().Add(time.Minute)); err != nil {
		t.Fatalf("add after expiry: %v", err)
	}
}

// TestUsedSetFullRefusesLogins: a full set of used states forgets nothing
// that has not expired; it refuses new logins instead (DESIGN.md behaviour
// 2), so flooding the callback cannot re-open replay.
func TestUsedSetFullRefusesLogins(t *testing.T) {
	t.Parallel()
	idp := idptest.New(t)
	clk := &clock{t: time.Now()}
	f := newFlow(t, idp, clk, "https://app.example/_gatehouse/callback")
	f.used.max = 4 // a state and a code per login: two logins fill it

	first := startAndAuthorize(t, f, idp)
	replay := first.Clone(t.Context())
	if _, _, err := f.Callback(httptest.NewRecorder(), first); err != nil {
		t.Fatal(err)
	}
	clk.advance(time.Minute)
	if _, _, err := f.Callback(httptest.NewRecorder(), startAndAuthorize(t, f, idp)); err != nil {
		t.Fatal(err)
	}
	// Full: a new login is refused, at the start and at the callback.
	if err := f.Start(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "https://app.example/", nil), "/"); !errors.Is(err, ErrBusy) {
		t.Errorf("Start with the set full: %v, want ErrBusy", err)
	}
	f.used.max = 5
	third := startAndAuthorize(t, f, idp) // room for its state, not its code
	if _, _, err := f.Callback(httptest.NewRecorder(), third); !errors.Is(err, ErrBusy) {
		t.Errorf("Callback with the set full: %v, want ErrBusy", err)
	}
	f.used.max = 4
	// The first login's state is still remembered.
	if _, _, err := f.Callback(httptest.NewRecorder(), replay); !errors.Is(err, ErrLoginState) {
		t.Errorf("replayed callback with the set full: %v, want ErrLoginState", err)
	}
	// Once the first login's window has passed, there is room again.
	clk.advance(LoginWindow - time.Minute + time.Second)
	if err := f.Start(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "https://app.example/", nil), "/"); err != nil {
		t.Errorf("Start after entries expired: %v", err)
	}
}

// TestLoginWaitsForDiscovery: a login that arrives while discovery is in
// flight waits for it, up to DiscoveryWait, instead of failing at once
// (DESIGN.md behaviour 11).
func TestLoginWaitsForDiscovery(t *testing.T) {
	t.Parallel()
	idp := idptest.New(t)
	clk := &clock{t: time.Now()}
	discovered := newFlow(t, idp, clk, "https://app.example/_gatehouse/callback").provider.Load()
	start := func(f *Flow, rec *httptest.ResponseRecorder) error {
		return f.Start(rec, httptest.NewRequest(http.MethodGet, "https://app.example/x", nil), "/x")
	}

	t.Run("discovery completes", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newUndiscoveredFlow(t, idp, clk, "https://app.example/_gatehouse/callback")
			rec := httptest.NewRecorder()
			errc := make(chan error, 1)
			go func() { errc <- start(f, rec) }()
			synctest.Wait() // Start is blocked: no provider yet
			select {
			case err := <-errc:
				t.Fatalf("Start returned before discovery: %v", err)
			default:
			}
			f.setProvider(discovered)
			if err := <-errc; err != nil {
				t.Fatalf("Start after discovery: %v", err)
			}
			if rec.Code != http.StatusFound || !strings.HasPrefix(rec.Header().Get("Location"), idp.URL) {
				t.Errorf("Start: %d to %q, want 302 to the IdP", rec.Code, rec.Header().Get("Location"))
			}
		})
	})
	t.Run("discovery does not complete", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newUndiscoveredFlow(t, idp, clk, "https://app.example/_gatehouse/callback")
			began := time.Now()
			if err := start(f, httptest.NewRecorder()); !errors.Is(err, ErrIdPUnavailable) {
				t.Fatalf("Start without discovery: %v, want ErrIdPUnavailable", err)
			}
			if waited := time.Since(began); waited != DiscoveryWait {
				t.Errorf("waited %v, want %v", waited, DiscoveryWait)
			}
		})
	})
}

// TestClassifyTokenError: only an OAuth refusal (RFC 6749 5.2) ends a
// session or refuses a login; temporarily_unavailable, which the token
// broker answers when it cannot reach the IdP, is an outage like a
// network error, and other answers are failures worth a retry.
func TestClassifyTokenError(t *testing.T) {
	t.Parallel()
	answer := func(status int, code string) error {
		return &oauth2.RetrieveError{Response: &http.Response{StatusCode: status}, ErrorCode: code}
	}
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"invalid_grant", answer(http.StatusBadRequest, "invalid_grant"), ErrLoginRefused},
		{"invalid_client", answer(http.StatusUnauthorized, "invalid_client"), ErrLoginRefused},
		{"unauthorized_client", answer(http.StatusForbidden, "unauthorized_client"), ErrLoginRefused},
		{"temporarily_unavailable", answer(http.StatusServiceUnavailable, "temporarily_unavailable"), ErrIdPUnavailable},
		{"server_error", answer(http.StatusServiceUnavailable, "server_error"), ErrIdPFailed},
		{"the broker refuses the sidecar's token", answer(http.StatusUnauthorized, "invalid_token"), ErrIdPFailed},
		{"gateway page", answer(http.StatusBadGateway, ""), ErrIdPFailed},
		{"network error", &url.Error{Op: "Post", URL: "https://broker.example/token", Err: errors.New("connection refused")}, ErrIdPUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := classifyTokenError("refresh token", tc.err); !errors.Is(got, tc.want) {
				t.Errorf("classifyTokenError(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
