// Package sessiontest is the conformance suite every session.Store passes.
//
// It drives a store only through its interface and real HTTP requests and
// responses, so the same tests hold the cookie store and the Redis store to
// one contract. It does not test anything store-specific (chunking, Redis
// outages); those live with each store.
package sessiontest

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/identity"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
)

// IgnoreStoreFields leaves out the fields a store sets for itself when
// comparing sessions.
var IgnoreStoreFields = cmpopts.IgnoreFields(session.Session{}, "Ref", "Stale")

// Clock is a settable clock shared by a test and the store under test.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock set to a fixed instant.
func NewClock() *Clock { return &Clock{t: time.Unix(1_800_000_000, 0)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// NewStore makes a fresh store for one test. Stores made with the same
// secret share state as far as their design does (same keys, same Redis);
// secret selects the key material so a test can make a "foreign" store.
type NewStore func(t *testing.T, clock *Clock, secret string) session.Store

// Sample returns a realistic session with JWT-shaped tokens.
func Sample(now time.Time, sub string) *session.Session {
	return &session.Session{
		Identity: identity.Identity{
			Subject: sub, Email: sub + "@example.com", EmailVerified: true,
			PreferredUsername: sub, Groups: []string{"developers", "team-a"},
		},
		IDToken:       "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIiwic3ViIjoi" + sub + "In0.c2lnbmF0dXJl",
		AccessToken:   "at-" + sub,
		RefreshToken:  "rt-" + sub,
		TokenExpiry:   now.Add(time.Hour),
		TokenIssuedAt: now,
		SID:           "sid-" + sub,
		CreatedAt:     now,
		ExpiresAt:     now.Add(12 * time.Hour),
	}
}

// Run runs the suite.
func Run(t *testing.T, newStore NewStore) {
	t.Run("SaveLoad", func(t *testing.T) { testSaveLoad(t, newStore) })
	t.Run("NoCookie", func(t *testing.T) { testNoCookie(t, newStore) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, newStore) })
	t.Run("Tampered", func(t *testing.T) { testTampered(t, newStore) })
	t.Run("Foreign", func(t *testing.T) { testForeign(t, newStore) })
	t.Run("Expired", func(t *testing.T) { testExpired(t, newStore) })
	t.Run("Overwrite", func(t *testing.T) { testOverwrite(t, newStore) })
	t.Run("ConcurrentWriters", func(t *testing.T) { testConcurrent(t, newStore) })
}

// Save stores s and returns a request carrying the resulting cookies.
func Save(t testing.TB, st session.Store, prev *http.Request, s *session.Session) *http.Request {
	t.Helper()
	if prev == nil {
		prev = httptest.NewRequest(http.MethodGet, "https://app.example/", nil)
	}
	rec := httptest.NewRecorder()
	if err := st.Save(rec, prev, s); err != nil {
		t.Fatalf("Save: %v", err)
	}
	return Follow(prev, rec.Result())
}

// Follow returns a new request with the cookies of prev updated by the
// Set-Cookie headers of resp, as a browser would keep them.
func Follow(prev *http.Request, resp *http.Response) *http.Request {
	jar := map[string]string{}
	var order []string
	for _, c := range prev.Cookies() {
		if _, ok := jar[c.Name]; !ok {
			order = append(order, c.Name)
		}
		jar[c.Name] = c.Value
	}
	for _, c := range resp.Cookies() {
		if c.MaxAge < 0 || (c.MaxAge == 0 && c.RawExpires != "" && c.Expires.Before(time.Now())) {
			delete(jar, c.Name)
			continue
		}
		if _, ok := jar[c.Name]; !ok {
			order = append(order, c.Name)
		}
		jar[c.Name] = c.Value
	}
	next := httptest.NewRequest(http.MethodGet, "https://app.example/", nil)
	var parts []string
	for _, n := range order {
		if v, ok := jar[n]; ok {
			parts = append(parts, n+"="+v)
		}
	}
	if len(parts) > 0 {
		next.Header.Set("Cookie", strings.Join(parts, "; "))
	}
	return next
}

func testSaveLoad(t *testing.T, newStore NewStore) {
	clock := NewClock()
	st := newStore(t, clock, "secret-a")
	want := Sample(clock.Now(), "ann")
	req := Save(t, st, nil, want)
	got, err := st.Load(req)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if diff := cmp.Diff(want, got, IgnoreStoreFields); diff != "" {
		t.Errorf("loaded session (-want +got):\n%s", diff)
	}
}

func testNoCookie(t *testing.T, newStore NewStore) {
	st := newStore(t, NewClock(), "secret-a")
	req := httptest.NewRequest(http.MethodGet, "https://app.example/", nil)
	req.Header.Set("Cookie", "other=1")
	if _, err := st.Load(req); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Load without cookie = %v, want ErrNotFound", err)
	}
}

func testDelete(t *testing.T, newStore NewStore) {
	clock := NewClock()
	st := newStore(t, clock, "secret-a")
	req := Save(t, st, nil, Sample(clock.Now(), "ann"))
	rec := httptest.NewRecorder()
	if err := st.Delete(rec, req); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := st.Load(Follow(req, rec.Result())); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Load after Delete = %v, want ErrNotFound", err)
	}
	cleared := 0
	for _, c := range rec.Result().Cookies() {
		if c.MaxAge < 0 {
			cleared++
		}
	}
	if cleared == 0 {
		t.Error("Delete cleared no cookie in the browser")
	}
}

func testTampered(t *testing.T, newStore NewStore) {
	clock := NewClock()
	st := newStore(t, clock, "secret-a")
	req := Save(t, st, nil, Sample(clock.Now(), "ann"))
	cookies := req.Cookies()
	if len(cookies) == 0 {
		t.Fatal("Save set no cookie")
	}
	v := cookies[0].Value
	mutations := map[string]string{
		"flipped byte": v[:len(v)/2] + string(rune('A'+(v[len(v)/2]-'A'+1)%26)) + v[len(v)/2+1:],
		"truncated":    v[:len(v)/2],
		"empty":        "",
		"appended":     v + "AAAA",
		"garbage":      "not-a-session",
	}
	for name, bad := range mutations {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "https://app.example/", nil)
			r.AddCookie(&http.Cookie{Name: cookies[0].Name, Value: bad})
			for _, c := range cookies[1:] {
				r.AddCookie(c)
			}
			if _, err := st.Load(r); !errors.Is(err, session.ErrNotFound) {
				t.Fatalf("Load(%s) = %v, want ErrNotFound", name, err)
			}
		})
	}
}

func testForeign(t *testing.T, newStore NewStore) {
	clock := NewClock()
	ours := newStore(t, clock, "secret-a")
	theirs := newStore(t, clock, "secret-b")
	req := Save(t, theirs, nil, Sample(clock.Now(), "mallory"))
	if _, err := ours.Load(req); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Load of a foreign session = %v, want ErrNotFound", err)
	}
}

func testExpired(t *testing.T, newStore NewStore) {
	clock := NewClock()
	st := newStore(t, clock, "secret-a")
	s := Sample(clock.Now(), "ann")
	s.ExpiresAt = clock.Now().Add(time.Hour)
	req := Save(t, st, nil, s)
	clock.Advance(2 * time.Hour)
	got, err := st.Load(req)
	switch {
	case errors.Is(err, session.ErrNotFound):
	case err != nil:
		t.Fatalf("Load of an expired session = %v", err)
	case !got.Expired(clock.Now()):
		t.Fatalf("expired session loaded as live: %+v", got)
	}
	// A session saved already expired is not kept.
	s2 := Sample(clock.Now(), "bob")
	s2.ExpiresAt = clock.Now().Add(-time.Minute)
	req2 := Save(t, st, nil, s2)
	if got, err := st.Load(req2); err == nil && !got.Expired(clock.Now()) {
		t.Fatal("session saved after its end loaded as live")
	}
}

func testOverwrite(t *testing.T, newStore NewStore) {
	clock := NewClock()
	st := newStore(t, clock, "secret-a")
	req := Save(t, st, nil, Sample(clock.Now(), "ann"))
	s2 := Sample(clock.Now(), "ann")
	s2.AccessToken = "at-rotated"
	req = Save(t, st, req, s2)
	got, err := st.Load(req)
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessToken != "at-rotated" {
		t.Errorf("AccessToken = %q after overwrite", got.AccessToken)
	}
}

func testConcurrent(t *testing.T, newStore NewStore) {
	clock := NewClock()
	st := newStore(t, clock, "secret-a")
	const writers = 20
	var wg sync.WaitGroup
	reqs := make([]*http.Request, writers)
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			s := Sample(clock.Now(), fmt.Sprintf("user%d", i))
			rec := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodGet, "https://app.example/", nil)
			if err := st.Save(rec, r, s); err != nil {
				errs <- err
				return
			}
			reqs[i] = Follow(r, rec.Result())
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Save: %v", err)
	}
	for i, r := range reqs {
		wg.Go(func() {
			got, err := st.Load(r)
			if err != nil {
				errs2 := fmt.Errorf("load %d: %w", i, err)
				t.Error(errs2)
				return
			}
			if want := fmt.Sprintf("user%d", i); got.Identity.Subject != want {
				t.Errorf("session %d belongs to %q, want %q", i, got.Identity.Subject, want)
			}
		})
	}
	wg.Wait()
}
