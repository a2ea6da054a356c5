package proxy

import (
	"context"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/session/redisstore"
)

// RedisUsers manages the Redis users of session stores: each may touch
// only the keys under its own --redis-key-prefix, with the commands the
// store needs. The controller uses it to give every namespace a user of
// its own, so that no namespace holds the shared Redis credential.
type RedisUsers struct {
	url, password string
}

// NewRedisUsers returns RedisUsers that administer the Redis at url
// (the forms of --redis-url) with password, which must allow ACL SETUSER,
// ACL DELUSER and ACL USERS. It does not connect.
func NewRedisUsers(url, password string) *RedisUsers {
	return &RedisUsers{url: url, password: password}
}

// Set creates or updates user name with password, limited to prefix: on
// the one server, or on every node of a Cluster (ACL changes are not
// replicated).
func (u *RedisUsers) Set(ctx context.Context, name, password, prefix string) error {
	return u.each(ctx, func(ctx context.Context, c redisstore.Admin) error {
		return redisstore.SetUser(ctx, c, name, password, prefix)
	})
}

// Delete removes user name everywhere; a missing user is no error.
func (u *RedisUsers) Delete(ctx context.Context, name string) error {
	return u.each(ctx, func(ctx context.Context, c redisstore.Admin) error {
		return redisstore.DeleteUser(ctx, c, name)
	})
}

// List names the users that start with prefix (on the first node of a
// Cluster).
func (u *RedisUsers) List(ctx context.Context, prefix string) ([]string, error) {
	var out []string
	err := u.each(ctx, func(ctx context.Context, c redisstore.Admin) error {
		if out != nil {
			return nil
		}
		users, err := redisstore.Users(ctx, c, prefix)
		if users == nil {
			users = []string{}
		}
		out = users
		return err
	})
	return out, err
}

func (u *RedisUsers) each(ctx context.Context, fn func(context.Context, redisstore.Admin) error) error {
	client, err := redisstore.NewClient(u.url, u.password)
	if err != nil {
		return err
	}
	defer func() { _ = client.Close() }()
	return redisstore.EachNode(ctx, client, fn)
}

// RedisACLRules are the ACL rules of a store's user under prefix, as
// RedisUsers.Set gives them (for a Redis whose users are made by hand).
func RedisACLRules(prefix string) []string { return redisstore.ACLRules(prefix) }
