package redisstore_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
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
	return newStoreWith(t, url, clock, secret, false)
}

// newStoreWith makes a store; with cache, its client-side cache runs until
// the test ends.
func newStoreWith(t testing.TB, url string, clock *sessiontest.Clock, secret string, cache bool) *redisstore.Store {
	t.Helper()
	return newStoreOpts(t, url, "", "", clock, secret, cache)
}

// newStoreOpts is newStoreWith with a password and a key prefix.
func newStoreOpts(t testing.TB, url, password, prefix string, clock *sessiontest.Clock, secret string, cache bool) *redisstore.Store {
	t.Helper()
	client, err := redisstore.NewClient(url, password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	codecs, err := cookiestore.Codecs([][]byte{[]byte(strings.Repeat(secret, 32/len(secret)+1))}, 12*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	st := redisstore.New(redisstore.Options{
		Client: client, CookieName: "__Host-gatehouse", Secure: true, Codecs: codecs,
		MaxLifetime: 12 * time.Hour, Now: clock.Now, ClientCache: cache, Prefix: prefix,
	})
	if cache {
		ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
		done := make(chan struct{})
		go func() { defer close(done); st.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		waitCaching(t, st)
	}
	return st
}

// waitCaching polls until st's cache serves, so that a test exercises it.
func waitCaching(t testing.TB, st *redisstore.Store) {
	t.Helper()
	poll(t, "the client-side cache to serve", func() bool { return st.Caching() })
}

// poll calls ok until it reports true, failing the test after 10s.
func poll(t testing.TB, what string, ok func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("waited 10s for %s", what)
		case <-time.After(time.Millisecond):
		}
	}
}

func TestConformanceStandalone(t *testing.T) {
	srv := redistest.Start(t)
	for _, cache := range []bool{false, true} {
		t.Run(cacheName(cache), func(t *testing.T) {
			sessiontest.Run(t, func(t *testing.T, clock *sessiontest.Clock, secret string) session.Store {
				return newStoreWith(t, srv.URL(), clock, secret, cache)
			})
		})
	}
}

func TestConformanceCluster(t *testing.T) {
	cluster := redistest.StartCluster(t)
	for _, cache := range []bool{false, true} {
		t.Run(cacheName(cache), func(t *testing.T) {
			sessiontest.Run(t, func(t *testing.T, clock *sessiontest.Clock, secret string) session.Store {
				return newStoreWith(t, cluster.URL(), clock, secret, cache)
			})
		})
	}
	t.Run("RevokeAcrossSlots", func(t *testing.T) {
		testRevoke(t, cluster.URL(), false)
	})
	t.Run("RevokeAcrossSlotsCached", func(t *testing.T) {
		testRevoke(t, cluster.URL(), true)
	})
	t.Run("LogoutReachesOtherReplica", func(t *testing.T) {
		testLogoutReachesOtherReplica(t, cluster.URL())
	})
}

func cacheName(cache bool) string {
	if cache {
		return "ClientCache"
	}
	return "NoClientCache"
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
	for _, cache := range []bool{false, true} {
		t.Run(cacheName(cache), func(t *testing.T) { testRevoke(t, srv.URL(), cache) })
	}
}

// testRevoke: a back-channel logout received by one replica ends the
// sessions on every replica. With the client-side cache, the other
// replica learns it from Redis's push, which arrives after Revoke
// returns: the test polls for it.
func testRevoke(t *testing.T, url string, cache bool) {
	clock := sessiontest.NewClock()
	a := newStoreWith(t, url, clock, "secret-a", cache) // two replicas sharing Redis
	b := newStoreWith(t, url, clock, "secret-a", cache)
	ann1 := sessiontest.Save(t, a, nil, sessiontest.Sample(clock.Now(), "ann"))
	ann2 := sessiontest.Save(t, b, nil, sessiontest.Sample(clock.Now(), "ann"))
	bob := sessiontest.Save(t, a, nil, sessiontest.Sample(clock.Now(), "bob"))
	for _, r := range []*http.Request{ann1, ann2, bob} { // cached where caching
		for _, st := range []*redisstore.Store{a, b} {
			if _, err := st.Load(r); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := b.Revoke(t.Context(), "sid-ann", "", clock.Now()); err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*http.Request{"ann's first session": ann1, "ann's second session": ann2} {
		for stName, st := range map[string]*redisstore.Store{"a": a, "b": b} {
			poll(t, name+" to be refused by "+stName+" after revoking her sid", func() bool {
				_, err := st.Load(r)
				return errors.Is(err, session.ErrNotFound)
			})
		}
	}
	if _, err := a.Load(bob); err != nil {
		t.Errorf("bob's session died with ann's: %v", err)
	}
	if err := a.Revoke(t.Context(), "", "bob", clock.Now()); err != nil {
		t.Fatal(err)
	}
	poll(t, "bob to be refused by b after revoking his sub", func() bool {
		_, err := b.Load(bob)
		return errors.Is(err, session.ErrNotFound)
	})
}

// TestLogoutReachesOtherReplica: a session that replica b serves from its
// client-side cache is refused by b right after a logout on replica a, and
// a refresh on a reaches b's cache too.
func TestLogoutReachesOtherReplica(t *testing.T) {
	srv := redistest.Start(t)
	testLogoutReachesOtherReplica(t, srv.URL())
}

func testLogoutReachesOtherReplica(t *testing.T, url string) {
	clock := sessiontest.NewClock()
	a := newStoreWith(t, url, clock, "secret-a", true)
	b := newStoreWith(t, url, clock, "secret-a", true)
	req := sessiontest.Save(t, a, nil, sessiontest.Sample(clock.Now(), "ann"))
	gets := getCalls(t, url)
	for range 10 {
		if _, err := b.Load(req); err != nil {
			t.Fatal(err)
		}
	}
	if n := getCalls(t, url) - gets; n != 1 {
		t.Errorf("10 loads of one session read Redis %d times, want 1 (the rest from the cache)", n)
	}
	sess, err := a.Load(req)
	if err != nil {
		t.Fatal(err)
	}
	sess.AccessToken = "at-refreshed"
	req = sessiontest.Save(t, a, req, sess)
	poll(t, "b to see a's refresh", func() bool {
		got, err := b.Load(req)
		return err == nil && got.AccessToken == "at-refreshed"
	})
	if err := a.Delete(httptest.NewRecorder(), req); err != nil {
		t.Fatal(err)
	}
	poll(t, "b to refuse the session a ended", func() bool {
		_, err := b.Load(req)
		return errors.Is(err, session.ErrNotFound)
	})
	if _, err := a.Load(req); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("a serves the session it ended: %v", err)
	}
}

// TestCacheEmptiedWhenTrackingBreaks: Redis restarts empty while b has the
// session cached. No invalidation can announce that, so b must have
// emptied its cache when its tracking connection broke, and refuse the
// session once Redis is back.
func TestCacheEmptiedWhenTrackingBreaks(t *testing.T) {
	srv := redistest.Start(t)
	clock := sessiontest.NewClock()
	b := newStoreWith(t, srv.URL(), clock, "secret-a", true)
	req := sessiontest.Save(t, b, nil, sessiontest.Sample(clock.Now(), "ann"))
	if _, err := b.Load(req); err != nil {
		t.Fatal(err)
	}
	srv.Restart()
	waitCaching(t, b)
	poll(t, "the session to be refused after Redis restarted empty", func() bool {
		_, err := b.Load(req)
		return errors.Is(err, session.ErrNotFound)
	})
	fresh := sessiontest.Save(t, b, nil, sessiontest.Sample(clock.Now(), "ann"))
	if _, err := b.Load(fresh); err != nil {
		t.Errorf("Load after Redis came back: %v", err)
	}
}

// TestCacheTrackingConnectionKilled: an operator's CLIENT KILL of the
// tracking connection alone; a record deleted meanwhile is refused.
func TestCacheTrackingConnectionKilled(t *testing.T) {
	srv := redistest.Start(t)
	clock := sessiontest.NewClock()
	b := newStoreWith(t, srv.URL(), clock, "secret-a", true)
	req := sessiontest.Save(t, b, nil, sessiontest.Sample(clock.Now(), "ann"))
	if _, err := b.Load(req); err != nil {
		t.Fatal(err)
	}
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer admin.Close()
	ctx := t.Context()
	// Delete the record and kill the tracking connection in one
	// transaction, so no push for the delete reaches b.
	var keys []string
	for _, k := range admin.Keys(ctx, "gatehouse:s:*").Val() {
		if !strings.HasSuffix(k, ":lock") {
			keys = append(keys, k)
		}
	}
	id := trackingClientID(t, admin)
	_, err := admin.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ClientKillByFilter(ctx, "ID", id)
		p.Del(ctx, keys...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, "the deleted session to be refused", func() bool {
		_, err := b.Load(req)
		return errors.Is(err, session.ErrNotFound)
	})
}

// getCalls sums the GET commands the Redis node(s) of url have served.
func getCalls(t *testing.T, url string) int {
	t.Helper()
	client, err := redisstore.NewClient(url, "")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var mu sync.Mutex
	total := 0
	count := func(ctx context.Context, c *redis.Client) error {
		info, err := c.Info(ctx, "commandstats").Result()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(info, "\n") {
			if rest, ok := strings.CutPrefix(line, "cmdstat_get:calls="); ok {
				n, _ := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
				mu.Lock()
				total += n
				mu.Unlock()
			}
		}
		return nil
	}
	switch c := client.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(t.Context(), count)
	case *redis.Client:
		err = count(t.Context(), c)
	}
	if err != nil {
		t.Fatal(err)
	}
	return total
}

func trackingClientID(t *testing.T, admin *redis.Client) string {
	t.Helper()
	for _, line := range strings.Split(admin.ClientList(t.Context()).Val(), "\n") {
		if !strings.Contains(line, "name=gatehouse-tracking") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if id, ok := strings.CutPrefix(f, "id="); ok {
				return id
			}
		}
	}
	t.Fatal("no tracking connection in CLIENT LIST")
	return ""
}

// TestRedisDown: a killed Redis makes every call ErrUnavailable within a
// bounded time, never ErrNotFound (which would start a login loop), and the
// store recovers by itself when Redis returns.
func TestRedisDown(t *testing.T) {
	for _, cache := range []bool{false, true} {
		t.Run(cacheName(cache), func(t *testing.T) { testRedisDown(t, cache) })
	}
}

func testRedisDown(t *testing.T, cache bool) {
	srv := redistest.Start(t)
	clock := sessiontest.NewClock()
	st := newStoreWith(t, srv.URL(), clock, "secret-a", cache)
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

// TestConformanceRestrictedUser: the store passes the conformance suite
// as a Redis user with ACLRules and nothing more, with and without the
// client-side cache; so those rules are all it needs.
func TestConformanceRestrictedUser(t *testing.T) {
	srv := redistest.Start(t)
	admin, err := redisstore.NewClient(srv.URL(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	if err := redisstore.SetUser(t.Context(), admin, "tenant", "tenant-pw", "gatehouse:tenant:"); err != nil {
		t.Fatal(err)
	}
	url := "redis://tenant@" + srv.Addr + "/0"
	for _, cache := range []bool{false, true} {
		t.Run(cacheName(cache), func(t *testing.T) {
			sessiontest.Run(t, func(t *testing.T, clock *sessiontest.Clock, secret string) session.Store {
				return newStoreOpts(t, url, "tenant-pw", "gatehouse:tenant:", clock, secret, cache)
			})
		})
	}
}
