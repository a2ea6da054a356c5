// Package redisstore keeps sessions in Redis so that every replica of an app
// shares them and logout kills copies of the cookie too.
//
// The browser's cookie holds only a random session id and a random record
// key, sealed with the cookie secret. The Redis record holds the session
// encrypted with that record key (AES-256-GCM), so a dump of Redis alone
// reveals no token, and the cookie alone holds none. One client
// (go-redis UniversalClient) serves standalone, Sentinel and Cluster.
// redisstore does not decide when to refresh or log out.
package redisstore

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/securecookie"
	"github.com/redis/go-redis/v9"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session/cookiestore"
)

// opTimeout bounds each store call on top of the client's own timeouts.
const opTimeout = 3 * time.Second

const (
	idLen  = 32
	keyLen = 32
)

// Options configure a Store.
type Options struct {
	Client     redis.UniversalClient
	CookieName string
	Secure     bool
	Codecs     []securecookie.Codec
	// Prefix starts every Redis key; default "gatehouse:".
	Prefix string
	// MaxLifetime bounds index entries (--session-lifetime).
	MaxLifetime time.Duration
	Now         func() time.Time
	// ClientCache keeps decoded records in memory, invalidated by Redis
	// (server-assisted client-side caching); it takes effect while Run
	// runs. Without it every Load reads Redis.
	ClientCache bool
	// Log receives the cache's state changes; nil discards them.
	Log *slog.Logger
}

// Store is the Redis session store.
type Store struct {
	opts   Options
	codecs atomic.Pointer[[]securecookie.Codec]

	// Caches that keep decryption off the path of a read from Redis.
	mu      sync.Mutex                  // guards refs and records
	refs    map[string]cachedRef        // cookie value -> reference
	records map[string]*session.Session // reference + sealed record -> session

	// cache serves records without a round trip while Redis tracks them
	// for this process; it never serves before Run has tracking on.
	cache *recordCache
}

// maxCached bounds each cache; past it the cache starts afresh.
const maxCached = 512

type cachedRef struct {
	ref   ref
	stale bool
}

var (
	_ session.Store   = (*Store)(nil)
	_ session.Revoker = (*Store)(nil)
)

// New returns a Store; it does not connect.
func New(opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = "gatehouse:"
	}
	s := &Store{opts: opts, cache: newRecordCache()}
	s.SetCodecs(opts.Codecs)
	return s
}

// Run keeps the client-side cache's tracking connections until ctx ends;
// without Options.ClientCache it returns at once. Reads are correct
// whether or not it runs: the cache serves only while tracking is on.
func (s *Store) Run(ctx context.Context) {
	if !s.opts.ClientCache {
		return
	}
	s.track(ctx)
}

// Caching reports whether the client-side cache currently serves reads.
func (s *Store) Caching() bool { return s.cache.serving() }

// SetCodecs replaces the cookie codecs (a rotated cookie secret).
func (s *Store) SetCodecs(codecs []securecookie.Codec) {
	s.codecs.Store(&codecs)
	s.mu.Lock()
	s.refs = nil
	s.mu.Unlock()
}

// openCookie returns the reference a cookie value seals.
func (s *Store) openCookie(value string) (ref, bool, error) {
	s.mu.Lock()
	c, ok := s.refs[value]
	s.mu.Unlock()
	if ok {
		return c.ref, c.stale, nil
	}
	plain, stale, err := cookiestore.Open(s.opts.CookieName, value, *s.codecs.Load())
	if err != nil {
		return ref{}, false, err
	}
	rf, ok := parseRef(string(plain))
	if !ok {
		return ref{}, false, fmt.Errorf("%w: malformed session reference", session.ErrNotFound)
	}
	s.mu.Lock()
	if s.refs == nil || len(s.refs) >= maxCached {
		s.refs = make(map[string]cachedRef)
	}
	s.refs[value] = cachedRef{rf, stale}
	s.mu.Unlock()
	return rf, stale, nil
}

// decodeRecord decrypts and parses a sealed record, from the cache when
// the same sealed bytes were decoded before.
func (s *Store) decodeRecord(rf ref, key string, sealed []byte) (*session.Session, error) {
	// The cache key holds every input of openRecord, so a hit is exactly
	// what decrypting again would give; a record copied under another
	// session's key still has to decrypt with that session's own key.
	ck := rf.String() + string(sealed)
	s.mu.Lock()
	cached, ok := s.records[ck]
	s.mu.Unlock()
	if ok {
		copied := *cached
		return &copied, nil
	}
	data, err := openRecord(rf, key, sealed)
	if err != nil {
		return nil, err
	}
	sess, err := session.Unmarshal(data)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.records == nil || len(s.records) >= maxCached {
		s.records = make(map[string]*session.Session)
	}
	s.records[ck] = sess
	s.mu.Unlock()
	copied := *sess
	return &copied, nil
}

// ref is what the cookie seals: the session id and the record key.
type ref struct {
	id, key []byte
}

func (r ref) String() string { return string(r.id) + string(r.key) }

func parseRef(s string) (ref, bool) {
	if len(s) != idLen+keyLen {
		return ref{}, false
	}
	return ref{id: []byte(s[:idLen]), key: []byte(s[idLen:])}, true
}

// recordKey is the Redis key of a session: a hash of its id, so that the
// keys in a dump are not session ids.
func (s *Store) recordKey(r ref) string {
	sum := sha256.Sum256(r.id)
	return s.opts.Prefix + "s:" + hex.EncodeToString(sum[:])
}

func (s *Store) indexKey(kind, v string) string {
	sum := sha256.Sum256([]byte(v))
	return s.opts.Prefix + kind + ":" + hex.EncodeToString(sum[:])
}

// Load reads the cookie and then the record. A bad cookie or a missing or
// undecryptable record is ErrNotFound; Redis failing is ErrUnavailable.
func (s *Store) Load(r *http.Request) (*session.Session, error) {
	c, err := r.Cookie(s.opts.CookieName)
	if err != nil {
		return nil, session.ErrNotFound
	}
	rf, stale, err := s.openCookie(c.Value)
	if err != nil {
		return nil, err
	}
	sess, err := s.get(r.Context(), rf, true)
	if err != nil {
		return nil, err
	}
	sess.Stale = stale
	return sess, nil
}

// get returns the record of rf: from the client-side cache when cached is
// true and the cache holds it, else read from Redis (one round trip) and
// decoded.
func (s *Store) get(ctx context.Context, rf ref, cached bool) (*session.Session, error) {
	key := s.recordKey(rf)
	refStr := rf.String()
	var t ticket
	if cached {
		var hit *session.Session
		if hit, t = s.cache.get(key, refStr); hit != nil {
			hit.Ref = refStr
			return hit, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	sealed, err := s.opts.Client.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: no record", session.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: load session: %w", session.ErrUnavailable, err)
	}
	sess, err := s.decodeRecord(rf, key, sealed)
	if err != nil {
		return nil, err
	}
	if cached {
		kept := *sess
		s.cache.put(t, key, refStr, &kept, len(sealed))
	}
	sess.Ref = refStr
	return sess, nil
}

// Save writes the record (new id and key for a new session, the same ones
// for an update), indexes it by sid and sub for back-channel logout, and
// sets the cookie.
func (s *Store) Save(w http.ResponseWriter, r *http.Request, sess *session.Session) error {
	ttl := sess.ExpiresAt.Sub(s.opts.Now())
	if ttl <= 0 {
		return s.Delete(w, r)
	}
	rf, existing := parseRef(sess.Ref)
	if !existing {
		rf = ref{id: make([]byte, idLen), key: make([]byte, keyLen)}
		_, _ = rand.Read(rf.id)
		_, _ = rand.Read(rf.key)
	}
	plain, err := session.Marshal(sess)
	if err != nil {
		return err
	}
	key := s.recordKey(rf)
	sealed, err := sealRecord(rf, key, plain)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	idxTTL := max(ttl, s.opts.MaxLifetime)
	// An update only overwrites a record that still exists: a logout or
	// back-channel logout that deleted it meanwhile must not be undone by a
	// refresh finishing late.
	var set *redis.StatusCmd
	var setXX *redis.BoolCmd
	_, err = s.opts.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		if existing {
			setXX = p.SetXX(ctx, key, sealed, ttl)
			return nil
		}
		set = p.Set(ctx, key, sealed, ttl)
		if sess.SID != "" {
			ik := s.indexKey("sid", sess.SID)
			p.SAdd(ctx, ik, key)
			p.Expire(ctx, ik, idxTTL)
		}
		if sub := sess.Identity.Subject; sub != "" {
			ik := s.indexKey("sub", sub)
			p.SAdd(ctx, ik, key)
			p.Expire(ctx, ik, idxTTL)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: save session: %w", session.ErrUnavailable, err)
	}
	// Redis pushes the change to every replica's cache; this one forgets
	// it now, so that its own next read sees the write.
	s.cache.invalidate(key)
	if setXX != nil && !setXX.Val() {
		return fmt.Errorf("%w: the session was ended while it was being updated", session.ErrNotFound)
	}
	_ = set
	value, err := cookiestore.Seal(s.opts.CookieName, []byte(rf.String()), *s.codecs.Load())
	if err != nil {
		return err
	}
	sess.Ref = rf.String()
	http.SetCookie(w, s.cookie(value, int(ttl/time.Second)))
	return nil
}

// Delete removes the record, so a copied cookie is dead too, and clears the
// cookie. The cookie is cleared even when Redis fails; the error is then
// ErrUnavailable.
func (s *Store) Delete(w http.ResponseWriter, r *http.Request) error {
	http.SetCookie(w, s.cookie("", -1))
	c, err := r.Cookie(s.opts.CookieName)
	if err != nil {
		return nil
	}
	plain, _, err := cookiestore.Open(s.opts.CookieName, c.Value, *s.codecs.Load())
	if err != nil {
		return nil
	}
	rf, ok := parseRef(string(plain))
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	key := s.recordKey(rf)
	err = s.opts.Client.Del(ctx, key).Err()
	s.cache.invalidate(key)
	if err != nil {
		return fmt.Errorf("%w: delete session: %w", session.ErrUnavailable, err)
	}
	return nil
}

// Revoke deletes every session indexed under sid or sub, on every replica
// at once since they share Redis. at is not needed: the records are gone.
func (s *Store) Revoke(ctx context.Context, sid, sub string, _ time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var idx []string
	if sid != "" {
		idx = append(idx, s.indexKey("sid", sid))
	}
	if sub != "" {
		idx = append(idx, s.indexKey("sub", sub))
	}
	for _, ik := range idx {
		members, err := s.opts.Client.SMembers(ctx, ik).Result()
		if err != nil {
			return fmt.Errorf("%w: read session index: %w", session.ErrUnavailable, err)
		}
		// One DEL a key: in a cluster the keys live in different slots.
		_, err = s.opts.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range members {
				p.Del(ctx, k)
			}
			p.Del(ctx, ik)
			return nil
		})
		s.cache.invalidate(members...)
		if err != nil {
			return fmt.Errorf("%w: delete sessions: %w", session.ErrUnavailable, err)
		}
	}
	return nil
}

// Reload reads the current record of sess (by its Ref) from Redis, for a
// replica that waited on another's refresh. It bypasses the client-side
// cache: the other replica's write may be younger than its invalidation
// push, and a rotated refresh token must not be used twice.
func (s *Store) Reload(ctx context.Context, sess *session.Session) (*session.Session, error) {
	rf, ok := parseRef(sess.Ref)
	if !ok {
		return nil, session.ErrNotFound
	}
	return s.get(ctx, rf, false)
}

// Lock takes a short cross-replica lock on the session (for refresh). It
// reports false when another replica holds it. unlock releases it only if
// it is still ours.
func (s *Store) Lock(ctx context.Context, sess *session.Session, ttl time.Duration) (unlock func(), ok bool, err error) {
	rf, valid := parseRef(sess.Ref)
	if !valid {
		return func() {}, true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	lockKey := s.recordKey(rf) + ":lock"
	token := rand.Text()
	ok, err = s.opts.Client.SetNX(ctx, lockKey, token, ttl).Result()
	if err != nil {
		return nil, false, fmt.Errorf("%w: lock session: %w", session.ErrUnavailable, err)
	}
	if !ok {
		return nil, false, nil
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
		defer cancel()
		_ = unlockScript.Run(ctx, s.opts.Client, []string{lockKey}, token).Err()
	}, true, nil
}

// unlockScript deletes the lock only if it still holds our token.
var unlockScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)

// MarkUsed records key (a logout token's jti) until ttl, across replicas;
// it reports false when key was already recorded.
func (s *Store) MarkUsed(ctx context.Context, kind, key string, ttl time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	ok, err := s.opts.Client.SetNX(ctx, s.indexKey(kind, key), 1, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("%w: record %s: %w", session.ErrUnavailable, kind, err)
	}
	return ok, nil
}

// ForgetUsed undoes MarkUsed, for an operation that failed after marking.
func (s *Store) ForgetUsed(ctx context.Context, kind, key string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	return s.opts.Client.Del(ctx, s.indexKey(kind, key)).Err()
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	return s.opts.Client.Ping(ctx).Err()
}

func (s *Store) cookie(value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: s.opts.CookieName, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: s.opts.Secure, SameSite: http.SameSiteLaxMode,
	}
}

// sealRecord encrypts a record with AES-256-GCM under the session's record
// key, bound to its Redis key.
func sealRecord(rf ref, redisKey string, plain []byte) ([]byte, error) {
	aead, err := newAEAD(rf.key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	return aead.Seal(nonce, nonce, plain, []byte(redisKey)), nil
}

func openRecord(rf ref, redisKey string, sealed []byte) ([]byte, error) {
	aead, err := newAEAD(rf.key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize() {
		return nil, fmt.Errorf("%w: short record", session.ErrNotFound)
	}
	plain, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte(redisKey))
	if err != nil {
		return nil, fmt.Errorf("%w: record does not decrypt", session.ErrNotFound)
	}
	return plain, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("record cipher: %w", err)
	}
	return cipher.NewGCM(block)
}
