package controllers

import (
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/gatehouse-dev/gatehouse/internal/redistest"
)

// TestRedisNamespaceUsers: on a real redis-server, the user the controller
// makes for namespace a can use its own keys and nothing else: not b's
// keys, not FLUSHALL, CONFIG or KEYS; and a collected user is gone.
func TestRedisNamespaceUsers(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	open := redis.NewClient(&redis.Options{Addr: srv.Addr})
	if err := open.ConfigSet(t.Context(), "requirepass", "admin-pw").Err(); err != nil {
		t.Fatal(err)
	}
	open.Close()
	p := &Provider{Name: "shared", SessionStore: &SessionStore{RedisURL: srv.URL(), NamespaceUsers: true}}
	admin := []byte("admin-pw")
	users := &redisUsers{}
	a, b := newNamespaceRedisUser(p, "team-a"), newNamespaceRedisUser(p, "team-b")
	for _, u := range []namespaceRedisUser{a, b} {
		if err := users.ensure(t.Context(), u, admin, u.password(admin)); err != nil {
			t.Fatal(err)
		}
	}
	if string(a.password(admin)) == string(b.password(admin)) || string(a.password(admin)) == string(a.password([]byte("other"))) {
		t.Fatal("namespace passwords are not distinct")
	}
	if !strings.Contains(a.url, "gatehouse-team-a@") || a.prefix != "gatehouse:team-a:" {
		t.Fatalf("user a: %+v", a)
	}
	as := func(u namespaceRedisUser, password []byte) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: u.name, Password: string(password)})
		t.Cleanup(func() { c.Close() })
		return c
	}
	ctx := t.Context()
	ca, cb := as(a, a.password(admin)), as(b, b.password(admin))
	if err := cb.Set(ctx, "gatehouse:team-b:s:x", "b's session", 0).Err(); err != nil {
		t.Fatalf("b writes its own key: %v", err)
	}
	if err := ca.Set(ctx, "gatehouse:team-a:s:x", "a's session", 0).Err(); err != nil {
		t.Fatalf("a writes its own key: %v", err)
	}
	refused := map[string]error{
		"read b's key":   ca.Get(ctx, "gatehouse:team-b:s:x").Err(),
		"write b's key":  ca.Set(ctx, "gatehouse:team-b:s:x", "forged", 0).Err(),
		"delete b's key": ca.Del(ctx, "gatehouse:team-b:s:x").Err(),
		"FLUSHALL":       ca.FlushAll(ctx).Err(),
		"CONFIG GET":     ca.ConfigGet(ctx, "*").Err(),
		"KEYS":           ca.Keys(ctx, "*").Err(),
		"ACL SETUSER":    ca.Do(ctx, "ACL", "SETUSER", "gatehouse-team-a", "+@all").Err(),
	}
	for what, err := range refused {
		if err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("%s as team-a's user: %v, want NOPERM", what, err)
		}
	}
	if v, err := cb.Get(ctx, "gatehouse:team-b:s:x").Result(); err != nil || v != "b's session" {
		t.Errorf("b's key after a's attempts: %q, %v", v, err)
	}

	// team-a has nothing of Gatehouse's any more: its user goes.
	if err := users.collect(ctx, p, admin, func(ns string) bool { return ns != "team-a" }); err != nil {
		t.Fatal(err)
	}
	if err := as(a, a.password(admin)).Ping(ctx).Err(); err == nil {
		t.Error("a collected user still signs in")
	}
	if err := cb.Ping(ctx).Err(); err != nil {
		t.Errorf("b's user: %v", err)
	}
}
