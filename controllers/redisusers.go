package controllers

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"sync"

	"github.com/gatehouse-dev/gatehouse/proxy"
)

// RedisUserPrefix starts the name of every Redis user the controller
// makes: gatehouse-<namespace>.
const RedisUserPrefix = "gatehouse-"

// namespaceRedisUser is the Redis user of one namespace for one
// provider's session store.
type namespaceRedisUser struct {
	provider, namespace string
	adminURL            string // the provider's redisURL, with its admin user if any
	name                string
	url                 string // adminURL with the namespace's user
	prefix              string
}

func newNamespaceRedisUser(p *Provider, ns string) namespaceRedisUser {
	u := namespaceRedisUser{
		provider: p.Name, namespace: ns, adminURL: p.SessionStore.RedisURL,
		name: RedisUserPrefix + ns, prefix: "gatehouse:" + ns + ":",
	}
	u.url = withUser(u.adminURL, u.name)
	return u
}

// withUser puts user into a redis:// URL (its password comes from
// GATEHOUSE_REDIS_PASSWORD).
func withUser(raw, user string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	u.User = url.User(user)
	return u.String()
}

// password derives the user's password from the admin credential: every
// controller replica and restart finds the same one without storing it,
// and rotating the admin credential rotates every namespace's.
func (u namespaceRedisUser) password(admin []byte) []byte {
	m := hmac.New(sha256.New, admin)
	m.Write([]byte("gatehouse redis user\x00" + u.provider + "\x00" + u.namespace))
	return []byte(hex.EncodeToString(m.Sum(nil)))
}

// redisUsers makes and removes namespaces' Redis users, remembering what
// it made so that a reconcile costs no round trip to Redis.
type redisUsers struct {
	mu   sync.Mutex        // guards made
	made map[string]string // provider/namespace -> password hash
}

// ensure makes (or updates) u with password, once per password.
func (r *redisUsers) ensure(ctx context.Context, u namespaceRedisUser, admin, password []byte) error {
	key := u.provider + "/" + u.namespace
	sum := sha256.Sum256(password)
	want := hex.EncodeToString(sum[:])
	r.mu.Lock()
	done := r.made[key] == want
	r.mu.Unlock()
	if done {
		return nil
	}
	if err := proxy.NewRedisUsers(u.adminURL, string(admin)).Set(ctx, u.name, string(password), u.prefix); err != nil {
		return fmt.Errorf("make Redis user %s: %w", u.name, err)
	}
	r.mu.Lock()
	if r.made == nil {
		r.made = map[string]string{}
	}
	r.made[key] = want
	r.mu.Unlock()
	return nil
}

// collect removes the provider's Redis users of namespaces for which keep
// says false: the last protected app of the namespace is gone.
func (r *redisUsers) collect(ctx context.Context, p *Provider, admin []byte, keep func(ns string) bool) error {
	users := proxy.NewRedisUsers(p.SessionStore.RedisURL, string(admin))
	names, err := users.List(ctx, RedisUserPrefix)
	if err != nil {
		return err
	}
	for _, name := range names {
		ns := strings.TrimPrefix(name, RedisUserPrefix)
		if keep(ns) {
			continue
		}
		if err := users.Delete(ctx, name); err != nil {
			return err
		}
		r.mu.Lock()
		delete(r.made, p.Name+"/"+ns)
		r.mu.Unlock()
	}
	return nil
}
