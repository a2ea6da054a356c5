package redisstore

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server-assisted client-side caching (https://redis.io/docs/latest/develop/reference/client-side-caching/).
//
// The store keeps one extra connection to every Redis master, in RESP3,
// with CLIENT TRACKING ON in broadcasting mode (BCAST) for the prefix of
// session records: Redis then pushes the name of every record key that any
// client writes, deletes or expires, on this connection, whichever
// connection read it. Broadcasting rather than the default mode means the
// pooled go-redis connections that read records need no tracking of their
// own, and it works alike for a standalone server, the master Sentinel
// names, and each master of a Cluster (each pushes the keys of its own
// slots). Its cost is a push to every replica for every record written
// anywhere: one a login, refresh or logout, not one a request.
//
// The connection is pinged every trackPing; no answer within trackTimeout,
// or any error, closes it and empties the cache, which then stays out of
// the way (every read goes to Redis) until a new connection has tracking
// on again. The cache is also emptied whenever the set of masters changes
// (it is read again every trackTopology), so a failover or a resharding
// cannot leave entries that no connection watches.

const (
	trackPing     = time.Second
	trackTimeout  = 3 * time.Second
	trackTopology = 2 * time.Second
	trackBackoff  = 100 * time.Millisecond
	trackMaxWait  = 5 * time.Second
)

// trackedNode is one Redis node the cache needs invalidations from.
type trackedNode struct {
	addr string
	opts *redis.Options
}

// trackedNodes lists the nodes that hold records: the one server (or the
// master Sentinel names, found by the client's own dialer) or every
// Cluster master.
func trackedNodes(ctx context.Context, client redis.UniversalClient) ([]trackedNode, error) {
	switch c := client.(type) {
	case *redis.Client:
		return []trackedNode{{addr: c.Options().Addr, opts: c.Options()}}, nil
	case *redis.ClusterClient:
		var mu sync.Mutex
		var nodes []trackedNode
		err := c.ForEachMaster(ctx, func(_ context.Context, m *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			nodes = append(nodes, trackedNode{addr: m.Options().Addr, opts: m.Options()})
			return nil
		})
		return nodes, err
	default:
		return nil, fmt.Errorf("no client-side caching for %T", client)
	}
}

// track keeps a tracking connection to every node until ctx ends.
func (s *Store) track(ctx context.Context) {
	type running struct{ stop context.CancelFunc }
	conns := map[string]running{}
	defer func() {
		for _, r := range conns {
			r.stop()
		}
	}()
	t := time.NewTicker(trackTopology)
	defer t.Stop()
	for {
		nodes, err := trackedNodes(ctx, s.opts.Client)
		if err == nil {
			want := map[string]bool{}
			var addrs []string
			for _, n := range nodes {
				want[n.addr] = true
				addrs = append(addrs, n.addr)
			}
			// The cache learns the nodes first, so that a connection that
			// comes up at once is counted.
			s.cache.setNodes(addrs)
			for addr, r := range conns {
				if !want[addr] {
					r.stop()
					delete(conns, addr)
				}
			}
			for _, n := range nodes {
				if _, ok := conns[n.addr]; !ok {
					nctx, stop := context.WithCancel(ctx)
					conns[n.addr] = running{stop}
					go s.trackNode(nctx, n)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// trackNode keeps one tracking connection to n, reconnecting with backoff.
func (s *Store) trackNode(ctx context.Context, n trackedNode) {
	wait := trackBackoff
	for ctx.Err() == nil {
		start := time.Now()
		err := s.trackOnce(ctx, n)
		s.cache.setUp(n.addr, false)
		if ctx.Err() != nil {
			return
		}
		s.log().Debug("Redis tracking connection lost; sessions are read from Redis until it is back", "node", n.addr, "error", err)
		if time.Since(start) > trackMaxWait {
			wait = trackBackoff
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, trackMaxWait)
	}
}

// trackOnce runs one tracking connection until it fails or ctx ends.
func (s *Store) trackOnce(ctx context.Context, n trackedNode) error {
	dctx, cancel := context.WithTimeout(ctx, trackTimeout)
	defer cancel()
	dial := n.opts.Dialer
	if dial == nil {
		d := &net.Dialer{Timeout: trackTimeout}
		dial = d.DialContext
	}
	network := n.opts.Network
	if network == "" {
		network = "tcp"
	}
	conn, err := dial(dctx, network, n.opts.Addr)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	defer conn.Close()
	r := bufio.NewReader(conn)
	w := bufio.NewWriter(conn)

	hello := []string{"HELLO", "3"}
	if n.opts.Password != "" {
		user := n.opts.Username
		if user == "" {
			user = "default"
		}
		hello = append(hello, "AUTH", user, n.opts.Password)
	}
	hello = append(hello, "SETNAME", "gatehouse-tracking")
	for _, cmd := range [][]string{hello, {"CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", s.opts.Prefix + "s:"}} {
		_ = conn.SetDeadline(time.Now().Add(trackTimeout))
		if err := writeCommand(w, cmd...); err != nil {
			return err
		}
		v, err := readValue(r)
		if err != nil {
			return fmt.Errorf("%s: %w", cmd[0], err)
		}
		if err := v.err(); err != nil {
			return fmt.Errorf("%s: %w", cmd[0], err)
		}
	}
	_ = conn.SetWriteDeadline(time.Time{})
	s.cache.setUp(n.addr, true)

	// Pings keep proving the connection alive; the reader below fails
	// when neither a push nor a pong arrived within trackTimeout.
	var wmu sync.Mutex
	pctx, stopPing := context.WithCancel(ctx)
	defer stopPing()
	go func() {
		t := time.NewTicker(trackPing)
		defer t.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
			wmu.Lock()
			_ = conn.SetWriteDeadline(time.Now().Add(trackTimeout))
			err := writeCommand(w, "PING")
			wmu.Unlock()
			if err != nil {
				_ = conn.Close()
				return
			}
		}
	}()
	for {
		_ = conn.SetReadDeadline(time.Now().Add(trackTimeout))
		v, err := readValue(r)
		if err != nil {
			return err
		}
		if err := v.err(); err != nil {
			return err
		}
		if v.kind != '>' || len(v.elems) < 2 || v.elems[0].str != "invalidate" {
			continue // a pong, or a push of another kind
		}
		if keys := v.elems[1]; keys.null {
			s.cache.flush() // FLUSHALL or FLUSHDB
		} else {
			names := make([]string, 0, len(keys.elems))
			for _, k := range keys.elems {
				names = append(names, k.str)
			}
			s.cache.invalidate(names...)
		}
	}
}

func (s *Store) log() *slog.Logger {
	if s.opts.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.opts.Log
}
