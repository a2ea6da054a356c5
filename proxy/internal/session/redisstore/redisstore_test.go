package redisstore_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gatehouse-dev/gatehouse/internal/redistest"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session/cookiestore"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session/redisstore"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session/sessiontest"
)

func newStore(t *testing.T, url string, clock *sessiontest.Clock, secret string) *redisstore.Store {
	t.Helper()
	client, err := redisstore.NewClient(url, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	codecs, err := cookiestore.Codecs([][]byte{[]byte(strings.Repeat(secret, 32/len(secret)+1))}, 12*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return redisstore.New(redisstore.Options{
		Client: client, CookieName: "__Host-gatehouse", Secure: true, Codecs: codecs,
		MaxLifetime: 12 * time.Hour, Now: clock.Now,
	})
}

func TestConformanceStandalone(t *testing.T) {
	srv := redistest.Start(t)
	sessiontest.Run(t, func(t *testing.T, clock *sessiontest.Clock, secret string) session.Store {
		return newStore(t, srv.URL(), clock, secret)
	})
}

func TestConformanceCluster(t *testing.T) {
	cluster := redistest.StartCluster(t)
	sessiontest.Run(t, func(t *testing.T, clock *sessiontest.Clock, secret string) session.Store {
		return newStore(t, cluster.URL(), clock, secret)
	})
	t.Run("RevokeAcrossSlots", func(t *testing.T) {
		testRevoke(t, cluster.URL())
	})
}

// TestDumpRevealsNoToken: every value in Redis is opaque; neither tokens
// nor identity appear in it, and the cookie holds no token either.
func TestDumpRevealsNoToken(t *testing.T) {
	srv := redistest.Start(t)
	clock := sessiontest.NewClock()
	st := newStore(t, srv.URL(), clock, "secret-a")
	s := sessiontest.RealisticSession(clock.Now())
	req := sessiontest.Save(t, st, nil, s)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer client.Close()
	ctx := t.Context()
	keys, err := client.Keys(ctx, "*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys: %v %v", keys, err)
	}
	var dump strings.Builder
	for _, k := range keys {
		dump.WriteString(k)
		switch client.Type(ctx, k).Val() {
		case "string":
			dump.WriteString(client.Get(ctx, k).Val())
		case "set":
			dump.WriteString(strings.Join(client.SMembers(ctx, k).Val(), ","))
		}
	}
	for name, secret := range map[string]string{
		"ID token": s.IDToken[40:80], "access token": s.AccessToken[40:80], "refresh token": s.RefreshToken,
		"subject": s.Identity.Subject, "email": s.Identity.Email,
	} {
		if strings.Contains(dump.String(), secret) {
			t.Errorf("the Redis dump reveals the %s", name)
		}
	}
	cookie := req.Cookies()[0].Value
	if len(cookie) > 300 {
		t.Errorf("cookie is %d bytes; it should hold only a reference", len(cookie))
	}
	ttl := client.PTTL(ctx, keys[0]).Val()
	for _, k := range keys {
		if strings.Contains(k, ":s:") {
			ttl = client.PTTL(ctx, k).Val()
		}
	}
	if want := s.ExpiresAt.Sub(clock.Now()); ttl > want || ttl < want-time.Minute {
		t.Errorf("record TTL %v, want about the session's remaining lifetime %v", ttl, want)
	}
}

func TestCopiedCookieDeadAfterDelete(t *testing.T) {
	srv := redistest.Start(t)
	clock := sessiontest.NewClock()
	st := newStore(t, srv.URL(), clock, "secret-a")
	req := sessiontest.Save(t, st, nil, sessiontest.Sample(clock.Now(), "ann"))
	copied := req.Clone(t.Context())
	if err := st.Delete(httptest.NewRecorder(), req); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load(copied); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("copied cookie after logout: %v, want ErrNotFound", err)
	}
}

func TestRevoke(t *testing.T) {
	srv := redistest.Start(t)
	testRevoke(t, srv.URL())
}

func testRevoke(t *testing.T, url string) {
	clock := sessiontest.NewClock()
	a := newStore(t, url, clock, "secret-a") // two replicas sharing Redis
	b := newStore(t, url, clock, "secret-a")
	ann1 := sessiontest.Save(t, a, nil, sessiontest.Sample(clock.Now(), "ann"))
	ann2 := sessiontest.Save(t, b, nil, sessiontest.Sample(clock.Now(), "ann"))
	bob := sessiontest.Save(t, a, nil, sessiontest.Sample(clock.Now(), "bob"))
	if err := b.Revoke(t.Context(), "sid-ann", "", clock.Now()); err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*http.Request{"ann on a": ann1, "ann on b": ann2} {
		if _, err := a.Load(r); !errors.Is(err, session.ErrNotFound) {
			t.Errorf("%s after revoking her sid: %v", name, err)
		}
	}
	if _, err := a.Load(bob); err != nil {
		t.Errorf("bob's session died with ann's: %v", err)
	}
	if err := a.Revoke(t.Context(), "", "bob", clock.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Load(bob); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("bob after revoking his sub: %v", err)
	}
}

// TestRedisDown: a killed Redis makes every call ErrUnavailable within a
// bounded time, never ErrNotFound (which would start a login loop), and the
// store recovers by itself when Redis returns.
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	clock := sessiontest.NewClock()
	st := newStore(t, srv.URL(), clock, "secret-a")
	req := sessiontest.Save(t, st, nil, sessiontest.Sample(clock.Now(), "ann"))
	srv.Kill()
	start := time.Now()
	if _, err := st.Load(req); !errors.Is(err, session.ErrUnavailable) {
		t.Fatalf("Load with Redis down: %v, want ErrUnavailable", err)
	}
	if err := st.Save(httptest.NewRecorder(), req, sessiontest.Sample(clock.Now(), "bob")); !errors.Is(err, session.ErrUnavailable) {
		t.Fatalf("Save with Redis down: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("two calls with Redis down took %v", d)
	}
	srv.Restart() // empty: the old session is gone, a new one works
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if st.Ping(ctx) == nil {
			break
		}
	}
	if _, err := st.Load(req); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("Load after Redis restarted empty: %v, want ErrNotFound", err)
	}
	fresh := sessiontest.Save(t, st, nil, sessiontest.Sample(clock.Now(), "ann"))
	if _, err := st.Load(fresh); err != nil {
		t.Errorf("Load after recovery: %v", err)
	}
}

func TestLockIsExclusive(t *testing.T) {
	srv := redistest.Start(t)
	clock := sessiontest.NewClock()
	a := newStore(t, srv.URL(), clock, "secret-a")
	b := newStore(t, srv.URL(), clock, "secret-a")
	req := sessiontest.Save(t, a, nil, sessiontest.Sample(clock.Now(), "ann"))
	sess, err := a.Load(req)
	if err != nil {
		t.Fatal(err)
	}
	unlock, ok, err := a.Lock(t.Context(), sess, 10*time.Second)
	if err != nil || !ok {
		t.Fatalf("first lock: %v %v", ok, err)
	}
	if _, ok, err := b.Lock(t.Context(), sess, 10*time.Second); err != nil || ok {
		t.Fatalf("second replica got the lock: %v %v", ok, err)
	}
	unlock()
	unlock2, ok, err := b.Lock(t.Context(), sess, 10*time.Second)
	if err != nil || !ok {
		t.Fatalf("lock after unlock: %v %v", ok, err)
	}
	unlock2()
}

func TestNewClientURLs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url  string
		kind string
	}{
		{"redis://127.0.0.1:6379/0", "*redis.Client"},
		{"rediss://:pw@redis.example:6380/1", "*redis.Client"},
		{"redis://127.0.0.1:7000?cluster=true", "*redis.ClusterClient"},
		{"redis://127.0.0.1:7000?addr=127.0.0.1:7001", "*redis.ClusterClient"},
		{"redis://127.0.0.1:26379?master_name=mymaster&addr=127.0.0.1:26380", "*redis.Client"},
	} {
		c, err := redisstore.NewClient(tc.url, "")
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if got := typeName(c); got != tc.kind {
			t.Errorf("%s: %s, want %s", tc.url, got, tc.kind)
		}
		c.Close()
	}
	for _, bad := range []string{"http://x", "redis://x?bogus=1", "::"} {
		if _, err := redisstore.NewClient(bad, ""); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func typeName(c redis.UniversalClient) string {
	switch c.(type) {
	case *redis.ClusterClient:
		return "*redis.ClusterClient"
	case *redis.Client:
		return "*redis.Client"
	}
	return "?"
}

// TestCopiedRecordRefused: someone who can write to Redis copies one
// session's record under another session's key; it must not decrypt, even
// after the first session was served (and cached).
func TestCopiedRecordRefused(t *testing.T) {
	srv := redistest.Start(t)
	clock := sessiontest.NewClock()
	st := newStore(t, srv.URL(), clock, "secret-a")
	admin := sessiontest.Save(t, st, nil, sessiontest.Sample(clock.Now(), "admin"))
	mallory := sessiontest.Save(t, st, nil, sessiontest.Sample(clock.Now(), "mallory"))
	for _, r := range []*http.Request{admin, mallory} {
		if _, err := st.Load(r); err != nil {
			t.Fatal(err)
		}
	}
	client := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer client.Close()
	ctx := t.Context()
	var records []string
	for _, k := range client.Keys(ctx, "gatehouse:s:*").Val() {
		if !strings.HasSuffix(k, ":lock") {
			records = append(records, k)
		}
	}
	if len(records) != 2 {
		t.Fatalf("records: %v", records)
	}
	a, b := client.Get(ctx, records[0]).Val(), client.Get(ctx, records[1]).Val()
	client.Set(ctx, records[0], b, time.Hour)
	client.Set(ctx, records[1], a, time.Hour)
	for name, r := range map[string]*http.Request{"admin": admin, "mallory": mallory} {
		if s, err := st.Load(r); !errors.Is(err, session.ErrNotFound) {
			t.Errorf("%s's cookie with the other's record: %v, %v", name, s, err)
		}
	}
}
