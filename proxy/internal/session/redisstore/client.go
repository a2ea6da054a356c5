package redisstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bounds on every Redis operation, so that a down or slow Redis turns into
// a 503 within a few seconds rather than a hung request (DESIGN.md
// behaviour 11). URL parameters (dial_timeout, read_timeout, ...) override
// them.
const (
	dialTimeout  = time.Second
	ioTimeout    = time.Second
	poolTimeout  = time.Second
	maxRetries   = 1
	minIdleConns = 2
)

// NewClient makes one go-redis client for the URL's topology:
//
//	redis://[user:pass@]host:port/db                      standalone
//	rediss://...                                          standalone over TLS
//	redis://host:port?master_name=mymaster&addr=h2:26379  Sentinel (the hosts are sentinels)
//	redis://host:port?cluster=true&addr=h2:port&addr=...  Redis Cluster (seed nodes)
//
// password, when not empty, replaces the URL's password (it comes from
// GATEHOUSE_REDIS_PASSWORD so that it stays out of flags). NewClient does
// not connect.
func NewClient(rawURL, password string) (redis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parse redis URL: %w", err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("redis URL scheme %q is not redis or rediss", u.Scheme)
	}
	q := u.Query()
	switch {
	case q.Has("master_name"):
		o, err := redis.ParseFailoverURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("parse redis sentinel URL: %w", err)
		}
		if password != "" {
			o.Password = password
		}
		setDefaults(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout, &o.MaxRetries, &o.MinIdleConns)
		return redis.NewFailoverClient(o), nil
	case q.Has("addr") || q.Get("cluster") == "true":
		q.Del("cluster")
		u.RawQuery = q.Encode()
		u.Path = "" // clusters have no database number
		o, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("parse redis cluster URL: %w", err)
		}
		if password != "" {
			o.Password = password
		}
		setDefaults(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout, &o.MaxRetries, &o.MinIdleConns)
		return redis.NewClusterClient(o), nil
	default:
		o, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("parse redis URL: %w", err)
		}
		if password != "" {
			o.Password = password
		}
		setDefaults(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout, &o.MaxRetries, &o.MinIdleConns)
		return redis.NewClient(o), nil
	}
}

func setDefaults(dial, read, write, pool *time.Duration, retries, minIdle *int) {
	for _, d := range []struct {
		p *time.Duration
		v time.Duration
	}{{dial, dialTimeout}, {read, ioTimeout}, {write, ioTimeout}, {pool, poolTimeout}} {
		if *d.p == 0 {
			*d.p = d.v
		}
	}
	if *retries == 0 {
		*retries = maxRetries
	}
	if *minIdle == 0 {
		*minIdle = minIdleConns
	}
}

// ValidateURL checks a redis URL without connecting.
func ValidateURL(rawURL string) error {
	c, err := NewClient(rawURL, "")
	if err != nil {
		return err
	}
	if c == nil {
		return errors.New("no client")
	}
	return c.Close()
}

// slogLogger adapts go-redis's logger to slog.
type slogLogger struct{ log *slog.Logger }

func (l slogLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "Redis client", "detail", fmt.Sprintf(format, v...))
}

// SetLogger routes go-redis's own messages (dial failures and the like,
// already reported by the store as errors) to log at debug level. go-redis
// keeps one process-wide logger, so the composition root calls this once.
func SetLogger(log *slog.Logger) { redis.SetLogger(slogLogger{log}) }
