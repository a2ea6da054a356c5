package cookiestore

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
)

// MaxCookieLen bounds each Set-Cookie value (name, value and attributes).
const MaxCookieLen = 4096

// MaxChunks bounds how many cookies one session may use.
const MaxChunks = 10

// Options configure a Store.
type Options struct {
	// Name is the base cookie name; chunks are Name-1, Name-2, ...
	Name string
	// Secure marks cookies Secure.
	Secure bool
	// Codecs encrypt and authenticate; the first encodes.
	Codecs []securecookie.Codec
	// Now is the clock.
	Now func() time.Time
}

// Store is the cookie session store.
type Store struct {
	opts    Options
	codecs  atomic.Pointer[[]securecookie.Codec]
	revoked *Revocations
	cache   decoded
}

// maxDecoded bounds the cache of decoded sessions.
const maxDecoded = 512

// decoded remembers sessions already authenticated and decoded, keyed by
// the exact cookie value, so the same browser's next requests skip the
// HMAC, decryption and decompression. Only a byte-identical value hits; the
// cache is emptied when the codecs change, and revocations are checked on
// every hit.
type decoded struct {
	mu sync.Mutex // guards m
	m  map[string]*session.Session
}

func (d *decoded) get(value string) (*session.Session, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.m[value]
	return s, ok
}

func (d *decoded) put(value string, s *session.Session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil || len(d.m) >= maxDecoded {
		d.m = make(map[string]*session.Session)
	}
	d.m[value] = s
}

func (d *decoded) reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.m = nil
}

var (
	_ session.Store   = (*Store)(nil)
	_ session.Revoker = (*Store)(nil)
)

// New returns a Store.
func New(opts Options) *Store {
	s := &Store{opts: opts, revoked: NewRevocations(opts.Now, 0)}
	s.SetCodecs(opts.Codecs)
	return s
}

// SetCodecs replaces the codecs, for a rotated cookie secret; sessions
// sealed with a codec that is no longer first load as Stale.
func (s *Store) SetCodecs(codecs []securecookie.Codec) {
	s.codecs.Store(&codecs)
	s.cache.reset()
}

// Revoke records a back-channel logout. The cookie store cannot reach the
// browsers' cookies, so it refuses, on this replica only, every session of
// sid or sub created before at.
func (s *Store) Revoke(_ context.Context, sid, sub string, at time.Time) error {
	s.revoked.Add(sid, sub, at)
	return nil
}

// Load reassembles and decodes the session cookies. Any problem with them
// is session.ErrNotFound.
func (s *Store) Load(r *http.Request) (*session.Session, error) {
	value, ok := s.read(r)
	if !ok {
		return nil, session.ErrNotFound
	}
	return s.Decode(value)
}

// Decode decrypts, authenticates and parses a reassembled cookie value.
// Every failure wraps session.ErrNotFound, and so does a session revoked by
// back-channel logout.
func (s *Store) Decode(value string) (*session.Session, error) {
	sess, ok := s.cache.get(value)
	if !ok {
		plain, stale, err := Open(s.opts.Name, value, *s.codecs.Load())
		if err != nil {
			return nil, err
		}
		if sess, err = session.Unmarshal(plain); err != nil {
			return nil, err
		}
		sess.Stale = stale
		s.cache.put(value, sess)
	}
	if s.revoked.Revoked(sess) {
		return nil, fmt.Errorf("%w: revoked by back-channel logout", session.ErrNotFound)
	}
	copied := *sess // callers may change their copy
	return &copied, nil
}

// Open unseals a cookie value with the first codec that accepts it; stale
// reports that it was not the first (an older secret). Failures wrap
// session.ErrNotFound.
func Open(name, value string, codecs []securecookie.Codec) (plain []byte, stale bool, err error) {
	if len(codecs) == 0 {
		return nil, false, session.ErrNotFound
	}
	if err := codecs[0].Decode(name, value, &plain); err == nil {
		return plain, false, nil
	}
	if len(codecs) > 1 {
		if err := securecookie.DecodeMulti(name, value, &plain, codecs[1:]...); err == nil {
			return plain, true, nil
		}
	}
	return nil, false, fmt.Errorf("%w: cookie does not authenticate", session.ErrNotFound)
}

// Seal seals plain under the first codec.
func Seal(name string, plain []byte, codecs []securecookie.Codec) (string, error) {
	value, err := securecookie.EncodeMulti(name, plain, codecs...)
	if err != nil {
		return "", fmt.Errorf("seal cookie: %w", err)
	}
	return value, nil
}

// read joins Name, Name-1, Name-2, ... in order until one is missing.
func (s *Store) read(r *http.Request) (string, bool) {
	cookies := ours(r, s.opts.Name)
	first, ok := cookies[0]
	if !ok {
		return "", false
	}
	if len(cookies) == 1 {
		return first, true
	}
	var b strings.Builder
	b.WriteString(first)
	for i := 1; i < MaxChunks; i++ {
		c, ok := cookies[i]
		if !ok {
			break
		}
		b.WriteString(c)
	}
	return b.String(), true
}

// ours returns the request's session cookies by chunk index.
func ours(r *http.Request, name string) map[int]string {
	out := map[int]string{}
	for _, c := range r.Cookies() {
		if c.Name == name {
			out[0] = c.Value
			continue
		}
		rest, ok := strings.CutPrefix(c.Name, name+"-")
		if !ok {
			continue
		}
		if i, err := strconv.Atoi(rest); err == nil && i > 0 && i < MaxChunks && strconv.Itoa(i) == rest {
			out[i] = c.Value
		}
	}
	return out
}

// Save encodes sess and writes it as one or more cookies that live until the
// session ends. Chunks the request had beyond the new count are cleared.
func (s *Store) Save(w http.ResponseWriter, r *http.Request, sess *session.Session) error {
	value, err := s.Encode(sess)
	if err != nil {
		return err
	}
	maxAge := int(sess.ExpiresAt.Sub(s.opts.Now()) / time.Second)
	if maxAge <= 0 {
		return s.Delete(w, r)
	}
	chunks, err := s.split(value, maxAge)
	if err != nil {
		return err
	}
	for i, c := range chunks {
		http.SetCookie(w, s.cookie(chunkName(s.opts.Name, i), c, maxAge))
	}
	for i := range ours(r, s.opts.Name) {
		if i >= len(chunks) {
			http.SetCookie(w, s.cookie(chunkName(s.opts.Name, i), "", -1))
		}
	}
	return nil
}

// Encode marshals and seals sess into one cookie value (before chunking).
func (s *Store) Encode(sess *session.Session) (string, error) {
	plain, err := session.Marshal(sess)
	if err != nil {
		return "", err
	}
	return Seal(s.opts.Name, plain, *s.codecs.Load())
}

// split cuts value so that every Set-Cookie line stays within MaxCookieLen.
func (s *Store) split(value string, maxAge int) ([]string, error) {
	var chunks []string
	for i := 0; len(value) > 0; i++ {
		if i == MaxChunks {
			return nil, fmt.Errorf("%w: needs more than %d cookies; use --session-store=redis", session.ErrTooLarge, MaxChunks)
		}
		overhead := len(s.cookie(chunkName(s.opts.Name, i), "", maxAge).String())
		room := MaxCookieLen - overhead
		n := min(room, len(value))
		chunks = append(chunks, value[:n])
		value = value[n:]
	}
	return chunks, nil
}

// Delete clears every session cookie the request carried (at least Name).
func (s *Store) Delete(w http.ResponseWriter, r *http.Request) error {
	http.SetCookie(w, s.cookie(s.opts.Name, "", -1))
	for i := range ours(r, s.opts.Name) {
		if i > 0 {
			http.SetCookie(w, s.cookie(chunkName(s.opts.Name, i), "", -1))
		}
	}
	return nil
}

func (s *Store) cookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     "/",
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   s.opts.Secure,
		SameSite: http.SameSiteLaxMode,
	}
}

func chunkName(name string, i int) string {
	if i == 0 {
		return name
	}
	return name + "-" + strconv.Itoa(i)
}
