package redisstore

import (
	"hash/maphash"
	"sync"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
)

// Bounds of the record cache: past either, entries are evicted (in no
// particular order) until the new one fits.
const (
	maxCachedRecords     = 1024
	maxCachedRecordBytes = 2 << 20
)

// recordCache holds decoded session records by Redis key while Redis
// tracks them for this process (CLIENT TRACKING): every write to a record
// on any replica reaches invalidate. It serves only while every node that
// holds records has a live tracking connection (ready); it is emptied
// whenever that stops or starts being so, since invalidations may have
// been missed in between.
//
// A read that misses records a ticket before asking Redis and stores what
// it read only if no invalidation of that key, and no reset, happened
// since: otherwise the value might predate a write whose invalidation was
// already applied.
type recordCache struct {
	seed maphash.Seed

	mu      sync.Mutex // guards the fields below
	ready   bool
	epoch   uint64                 // bumped by every reset
	stripes [64]uint64             // bumped by every invalidation of a key hashing there
	entries map[string]cachedEntry // Redis key -> record
	bytes   int
	nodes   map[string]bool // tracked node -> its connection is up
}

type cachedEntry struct {
	ref  string // the cookie reference that decrypted the record
	sess *session.Session
	size int
}

// ticket is what a miss remembers until it may store its read.
type ticket struct {
	ok     bool
	epoch  uint64
	stripe int
	gen    uint64
}

func newRecordCache() *recordCache {
	return &recordCache{seed: maphash.MakeSeed(), entries: map[string]cachedEntry{}, nodes: map[string]bool{}}
}

func (c *recordCache) stripe(key string) int {
	return int(maphash.String(c.seed, key) % uint64(len(c.stripes)))
}

// get returns a copy of the cached session of key, if it was decrypted
// with ref, and otherwise a ticket for put.
func (c *recordCache) get(key, ref string) (*session.Session, ticket) {
	i := c.stripe(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ready {
		return nil, ticket{}
	}
	if e, ok := c.entries[key]; ok && e.ref == ref {
		copied := *e.sess
		return &copied, ticket{}
	}
	return nil, ticket{ok: true, epoch: c.epoch, stripe: i, gen: c.stripes[i]}
}

// put stores sess under key if t is still current.
func (c *recordCache) put(t ticket, key, ref string, sess *session.Session, size int) {
	if !t.ok || size > maxCachedRecordBytes/8 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ready || c.epoch != t.epoch || c.stripes[t.stripe] != t.gen {
		return
	}
	if old, ok := c.entries[key]; ok {
		c.bytes -= old.size
		delete(c.entries, key)
	}
	for k, e := range c.entries {
		if len(c.entries) < maxCachedRecords && c.bytes+size <= maxCachedRecordBytes {
			break
		}
		c.bytes -= e.size
		delete(c.entries, k)
	}
	c.entries[key] = cachedEntry{ref: ref, sess: sess, size: size}
	c.bytes += size
}

// invalidate forgets keys, as Redis asks when they change.
func (c *recordCache) invalidate(keys ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		c.stripes[c.stripe(k)]++
		if e, ok := c.entries[k]; ok {
			c.bytes -= e.size
			delete(c.entries, k)
		}
	}
}

// flush forgets everything (FLUSHALL, or an invalidation stream that
// cannot be trusted any more).
func (c *recordCache) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resetLocked()
}

func (c *recordCache) resetLocked() {
	c.epoch++
	clear(c.entries)
	c.bytes = 0
}

// setNodes sets the nodes whose tracking connections the cache needs.
func (c *recordCache) setNodes(addrs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := len(addrs) != len(c.nodes)
	next := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		up, known := c.nodes[a]
		changed = changed || !known
		next[a] = up
	}
	if changed {
		c.nodes = next
		c.updateLocked()
	}
}

// setUp records whether the tracking connection to addr is up.
func (c *recordCache) setUp(addr string, up bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if was, known := c.nodes[addr]; !known || was == up {
		return
	}
	c.nodes[addr] = up
	c.updateLocked()
}

// updateLocked recomputes ready after a change of nodes and empties the
// cache: whichever way it went, invalidations may have been missed.
func (c *recordCache) updateLocked() {
	ready := len(c.nodes) > 0
	for _, up := range c.nodes {
		ready = ready && up
	}
	c.ready = ready
	c.resetLocked()
}

// serving reports whether the cache currently serves reads.
func (c *recordCache) serving() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready
}
