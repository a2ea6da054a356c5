package cookiestore_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session/cookiestore"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session/sessiontest"
)

func secret(s string) []byte { return []byte(strings.Repeat(s, 32/len(s)+1)) }

func newStore(t *testing.T, clock *sessiontest.Clock, secrets ...string) *cookiestore.Store {
	t.Helper()
	var keys [][]byte
	for _, s := range secrets {
		keys = append(keys, secret(s))
	}
	codecs, err := cookiestore.Codecs(keys, 12*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return cookiestore.New(cookiestore.Options{Name: "__Host-gatehouse", Secure: true, Codecs: codecs, Now: clock.Now})
}

func TestConformance(t *testing.T) {
	sessiontest.Run(t, func(t *testing.T, clock *sessiontest.Clock, secret string) session.Store {
		return newStore(t, clock, secret)
	})
}

func TestCodecsRejectShortSecret(t *testing.T) {
	t.Parallel()
	if _, err := cookiestore.Codecs([][]byte{[]byte("short")}, time.Hour); err == nil {
		t.Fatal("a 5-byte secret was accepted")
	}
	if _, err := cookiestore.Codecs(nil, time.Hour); err == nil {
		t.Fatal("no secret was accepted")
	}
}

// TestRotation: a cookie sealed with the previous secret is still accepted
// once a new secret is first; one sealed with a dropped secret is not.
func TestRotation(t *testing.T) {
	t.Parallel()
	clock := sessiontest.NewClock()
	old := newStore(t, clock, "old-secret")
	rotated := newStore(t, clock, "new-secret", "old-secret")
	dropped := newStore(t, clock, "new-secret")
	req := sessiontest.Save(t, old, nil, sessiontest.Sample(clock.Now(), "ann"))
	if _, err := rotated.Load(req); err != nil {
		t.Fatalf("session under the previous secret rejected after rotation: %v", err)
	}
	if _, err := dropped.Load(req); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("session under a dropped secret = %v, want ErrNotFound", err)
	}
}

func bigSession(now time.Time, groups int) *session.Session {
	s := sessiontest.Sample(now, "ann")
	for i := range groups {
		s.Identity.Groups = append(s.Identity.Groups, fmt.Sprintf("group-%04d-%s", i, rand.Text()))
	}
	return s
}

func TestChunking(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		groups     int
		wantChunks int
	}{
		{"small session, one cookie", 0, 1},
		{"two cookies", 100, 2},
		{"several cookies", 400, 0}, // 0: more than two
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := sessiontest.NewClock()
			st := newStore(t, clock, "secret-a")
			want := bigSession(clock.Now(), tc.groups)
			rec := httptest.NewRecorder()
			if err := st.Save(rec, httptest.NewRequest(http.MethodGet, "/", nil), want); err != nil {
				t.Fatal(err)
			}
			lines := rec.Result().Header["Set-Cookie"]
			for i, l := range lines {
				if len(l) > cookiestore.MaxCookieLen {
					t.Errorf("Set-Cookie %d is %d bytes, over %d", i, len(l), cookiestore.MaxCookieLen)
				}
				for _, attr := range []string{"Path=/", "HttpOnly", "Secure", "SameSite=Lax"} {
					if !strings.Contains(l, attr) {
						t.Errorf("Set-Cookie %d lacks %s: %.80s...", i, attr, l)
					}
				}
				if strings.Contains(strings.ToLower(l), "domain=") {
					t.Errorf("Set-Cookie %d has a Domain", i)
				}
			}
			if tc.wantChunks > 0 && len(lines) != tc.wantChunks {
				t.Errorf("%d cookies, want %d", len(lines), tc.wantChunks)
			}
			if tc.wantChunks == 0 && len(lines) <= 2 {
				t.Errorf("%d cookies, want more than 2", len(lines))
			}
			got, err := st.Load(sessiontest.Follow(httptest.NewRequest(http.MethodGet, "/", nil), rec.Result()))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("reassembled session differs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStaleChunksCleared(t *testing.T) {
	t.Parallel()
	clock := sessiontest.NewClock()
	st := newStore(t, clock, "secret-a")
	req := sessiontest.Save(t, st, nil, bigSession(clock.Now(), 400))
	before := len(req.Cookies())
	if before < 3 {
		t.Fatalf("setup: %d chunks", before)
	}
	rec := httptest.NewRecorder()
	if err := st.Save(rec, req, sessiontest.Sample(clock.Now(), "ann")); err != nil {
		t.Fatal(err)
	}
	cleared := map[string]bool{}
	for _, c := range rec.Result().Cookies() {
		if c.MaxAge < 0 {
			cleared[c.Name] = true
		}
	}
	for i := 1; i < before; i++ {
		if name := fmt.Sprintf("__Host-gatehouse-%d", i); !cleared[name] {
			t.Errorf("stale chunk %s not cleared", name)
		}
	}
	next := sessiontest.Follow(req, rec.Result())
	if n := len(next.Cookies()); n != 1 {
		t.Errorf("browser keeps %d cookies, want 1", n)
	}
	if got, err := st.Load(next); err != nil || got.Identity.Subject != "ann" || len(got.Identity.Groups) != 2 {
		t.Errorf("Load after shrinking = %+v, %v", got, err)
	}
}

func TestTooLarge(t *testing.T) {
	t.Parallel()
	clock := sessiontest.NewClock()
	st := newStore(t, clock, "secret-a")
	err := st.Save(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil), bigSession(clock.Now(), 3000))
	if !errors.Is(err, session.ErrTooLarge) {
		t.Fatalf("Save of a huge session = %v, want ErrTooLarge", err)
	}
}

// TestSwappedChunks: chunks are authenticated as one value, so reordering
// or mixing chunks of two sessions is "no session".
func TestSwappedChunks(t *testing.T) {
	t.Parallel()
	clock := sessiontest.NewClock()
	st := newStore(t, clock, "secret-a")
	a := sessiontest.Save(t, st, nil, bigSession(clock.Now(), 150)).Cookies()
	b := sessiontest.Save(t, st, nil, bigSession(clock.Now(), 150)).Cookies()
	if len(a) < 2 || len(b) < 2 {
		t.Fatal("setup: sessions not chunked")
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(a[0])
	r.AddCookie(b[1])
	if _, err := st.Load(r); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("mixed chunks = %v, want ErrNotFound", err)
	}
}

// TestCookieSize holds the session cookie to at most 1.4 times the raw
// bytes of the tokens it carries, for realistic RS256 tokens.
func TestCookieSize(t *testing.T) {
	t.Parallel()
	clock := sessiontest.NewClock()
	st := newStore(t, clock, "secret-a")
	s := sessiontest.RealisticSession(clock.Now())
	value, err := st.Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	raw := len(s.IDToken) + len(s.AccessToken) + len(s.RefreshToken)
	ratio := float64(len(value)) / float64(raw)
	t.Logf("tokens %d bytes, cookie %d bytes, ratio %.2f", raw, len(value), ratio)
	if ratio > 1.4 {
		t.Errorf("cookie is %.2f times the tokens, want at most 1.4", ratio)
	}
}

func FuzzDecode(f *testing.F) {
	clock := sessiontest.NewClock()
	codecs, err := cookiestore.Codecs([][]byte{secret("fuzz")}, 12*time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	st := cookiestore.New(cookiestore.Options{Name: "gatehouse", Codecs: codecs, Now: clock.Now})
	good, err := st.Encode(sessiontest.Sample(clock.Now(), "ann"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add("")
	f.Add("MTgwMDAwMDAwMHxhYmN8ZGVm")
	f.Fuzz(func(t *testing.T, value string) {
		s, err := st.Decode(value)
		if err != nil {
			if !errors.Is(err, session.ErrNotFound) {
				t.Fatalf("Decode error %v is not ErrNotFound", err)
			}
			return
		}
		if value != good {
			t.Fatalf("Decode accepted a forged value %q as %+v", value, s)
		}
	})
}

// TestDecodedCacheFollowsSecrets: a session decoded once is not served
// from memory after its secret is dropped, nor after a revocation.
func TestDecodedCacheFollowsSecrets(t *testing.T) {
	t.Parallel()
	clock := sessiontest.NewClock()
	st := newStore(t, clock, "old-secret")
	req := sessiontest.Save(t, st, nil, sessiontest.Sample(clock.Now(), "ann"))
	for range 2 {
		if _, err := st.Load(req); err != nil {
			t.Fatal(err)
		}
	}
	codecs, err := cookiestore.Codecs([][]byte{secret("new-secret")}, 12*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	st.SetCodecs(codecs)
	if _, err := st.Load(req); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("cached session under a dropped secret: %v", err)
	}
	fresh := sessiontest.Save(t, st, nil, sessiontest.Sample(clock.Now(), "bob"))
	if _, err := st.Load(fresh); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if err := st.Revoke(t.Context(), "", "bob", clock.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load(fresh); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("cached session after revocation: %v", err)
	}
}
