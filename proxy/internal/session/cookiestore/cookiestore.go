package cookiestore

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
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
	opts Options
}

var _ session.Store = (*Store)(nil)

// New returns a Store.
func New(opts Options) *Store { return &Store{opts: opts} }

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
// Every failure wraps session.ErrNotFound.
func (s *Store) Decode(value string) (*session.Session, error) {
	var plain []byte
	if err := securecookie.DecodeMulti(s.opts.Name, value, &plain, s.opts.Codecs...); err != nil {
		return nil, fmt.Errorf("%w: %w", session.ErrNotFound, err)
	}
	return session.Unmarshal(plain)
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
	value, err := securecookie.EncodeMulti(s.opts.Name, plain, s.opts.Codecs...)
	if err != nil {
		return "", fmt.Errorf("seal session cookie: %w", err)
	}
	return value, nil
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
