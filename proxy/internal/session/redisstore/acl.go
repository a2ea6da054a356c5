package redisstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// ACLRules are the Redis ACL rules (for ACL SETUSER) of a user that may
// run this store under key prefix and nothing else: its keys only, the
// commands the store, its client-side cache and go-redis's connection
// set-up send, no Pub/Sub channel. A user with these rules cannot read,
// write or delete keys outside prefix, nor run FLUSHALL, CONFIG, KEYS or
// any other administrative command.
func ACLRules(prefix string) []string {
	if prefix == "" {
		prefix = "gatehouse:"
	}
	rules := []string{"resetkeys", "resetchannels", "-@all", "~" + escapeGlob(prefix) + "*"}
	for _, cmd := range aclCommands {
		rules = append(rules, "+"+cmd)
	}
	return rules
}

// aclCommands are what the store sends: its reads, writes and the lock
// script (EVALSHA, then EVAL the first time), and what go-redis sends on
// connecting (HELLO with AUTH, CLIENT SETINFO, SELECT, PING) and to learn
// a Cluster's topology and commands; CLIENT TRACKING is the cache's.
var aclCommands = []string{
	"get", "set", "del", "expire", "pexpire", "exists", "sadd", "smembers", "eval", "evalsha",
	"ping", "hello", "auth", "select", "client|setinfo", "client|tracking", "client|id",
	"cluster|slots", "cluster|shards", "cluster|nodes", "command", "readonly",
}

// escapeGlob escapes the glob characters of a key pattern.
func escapeGlob(s string) string {
	r := strings.NewReplacer(`\`, `\\`, "*", `\*`, "?", `\?`, "[", `\[`, "]", `\]`)
	return r.Replace(s)
}

// SetUser creates or updates Redis user name (ACL SETUSER, through admin)
// with password and ACLRules(prefix). Rules for commands the server does
// not have (CLIENT SETINFO before Redis 7.2, CLUSTER SHARDS before 7.0)
// are left out; go-redis does without them.
func SetUser(ctx context.Context, admin redis.UniversalClient, name, password, prefix string) error {
	rules := ACLRules(prefix)
	for range len(rules) {
		args := []any{"ACL", "SETUSER", name, "reset", "on", ">" + password}
		for _, r := range rules {
			args = append(args, r)
		}
		err := admin.Do(ctx, args...).Err()
		if err == nil {
			return nil
		}
		bad := unknownRule(err.Error())
		i := slices.Index(rules, bad)
		if bad == "" || i < 0 || !strings.HasPrefix(bad, "+") {
			return fmt.Errorf("acl setuser %s: %w", name, err)
		}
		rules = slices.Delete(rules, i, i+1)
	}
	return fmt.Errorf("acl setuser %s: no rule set accepted", name)
}

// unknownRule picks the rule out of "ERR Error in ACL SETUSER modifier
// '+client|setinfo': Unknown command or category name in ACL".
func unknownRule(msg string) string {
	if !strings.Contains(msg, "Unknown command") {
		return ""
	}
	_, rest, ok := strings.Cut(msg, "'")
	if !ok {
		return ""
	}
	rule, _, _ := strings.Cut(rest, "'")
	return rule
}

// DeleteUser removes Redis user name; a missing user is no error.
func DeleteUser(ctx context.Context, admin redis.UniversalClient, name string) error {
	if err := admin.Do(ctx, "ACL", "DELUSER", name).Err(); err != nil {
		return fmt.Errorf("acl deluser %s: %w", name, err)
	}
	return nil
}

// Users lists the Redis users whose names start with prefix.
func Users(ctx context.Context, admin redis.UniversalClient, prefix string) ([]string, error) {
	all, err := admin.Do(ctx, "ACL", "USERS").StringSlice()
	if err != nil {
		return nil, fmt.Errorf("acl users: %w", err)
	}
	return slices.DeleteFunc(all, func(u string) bool { return !strings.HasPrefix(u, prefix) }), nil
}

// Admin is a connection that administers users.
type Admin = redis.UniversalClient

// EachNode runs fn on the one server, or on every node (masters and
// replicas) of a Cluster, one after the other. Sentinel setups are not
// walked: their replicas would miss the users after a failover.
func EachNode(ctx context.Context, client redis.UniversalClient, fn func(context.Context, Admin) error) error {
	switch c := client.(type) {
	case *redis.ClusterClient:
		var mu sync.Mutex
		return c.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			return fn(ctx, node)
		})
	case *redis.Client:
		if c.Options().Dialer != nil && c.Options().Addr == "FailoverClient" {
			return fmt.Errorf("redis users: Sentinel setups are not supported; make the users by hand (RedisACLRules) or copy the password")
		}
		return fn(ctx, c)
	default:
		return fmt.Errorf("redis users: no support for %T", client)
	}
}
