package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// MaxAssertionLifetime bounds every JWT the proxy signs (DESIGN.md
// behaviour 5 and 9).
const MaxAssertionLifetime = 5 * time.Minute

// reuseMargin is how long before expiry a cached assertion stops being
// handed out, so that an app never receives one about to expire.
const reuseMargin = 3 * time.Minute

// maxCached bounds the assertion cache; past it the cache starts afresh.
const maxCached = 4096

// Claims are the claims of an identity assertion.
type Claims struct {
	Issuer    string   `json:"iss"`
	Audience  string   `json:"aud"`
	Subject   string   `json:"sub"`
	Email     string   `json:"email,omitempty"`
	Groups    []string `json:"groups"`
	IssuedAt  int64    `json:"iat"`
	Expiry    int64    `json:"exp"`
	NotBefore int64    `json:"nbf"`
}

// Signer signs identity assertions with an ES256 key and publishes the
// public keys that verify them as a JWKS. Signatures are made by go-jose.
// Assertions are cached per identity, issuer and audience and reused while
// they have more than a few minutes left, which keeps ECDSA signing off the
// common request path. A Signer never changes its keys; Rotated makes the
// next one.
type Signer struct {
	signer jose.Signer
	keys   []publishedKey // keys[0] signs
	now    func() time.Time

	mu    sync.Mutex // guards the fields below
	cache map[string]cached
	// jwks is the encoded key set, valid until jwksUntil (when a retired
	// key leaves it).
	jwks      []byte
	jwksUntil time.Time
}

// publishedKey is a public key in the JWKS; until is when it leaves it
// (zero: never), for a key that no longer signs.
type publishedKey struct {
	jwk   jose.JSONWebKey
	until time.Time
}

type cached struct {
	token  string
	expiry time.Time
}

// NewSigner makes a fresh random P-256 key. now is the clock.
func NewSigner(now func() time.Time) (*Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity key: %w", err)
	}
	return newSigner([]*ecdsa.PrivateKey{key}, now)
}

// NewSignerFromSecret is NewSignerFromSecrets with one secret.
func NewSignerFromSecret(secret []byte, now func() time.Time) (*Signer, error) {
	return NewSignerFromSecrets([][]byte{secret}, now)
}

// NewSignerFromSecrets derives one P-256 key from each secret (the lines of
// the cookie secret file) with HKDF-SHA256. The first key signs; all are
// published. Every replica that shares the secrets therefore signs with the
// same key and publishes the same JWKS, however long it has run: a page
// token from one pod verifies against jwks.json fetched through any other,
// also while a rotation has the new secret first and the old one second.
func NewSignerFromSecrets(secrets [][]byte, now func() time.Time) (*Signer, error) {
	if len(secrets) == 0 {
		return nil, fmt.Errorf("derive identity key: no secret")
	}
	keys := make([]*ecdsa.PrivateKey, 0, len(secrets))
	for _, secret := range secrets {
		key, err := deriveKey(secret)
		if err != nil {
			return nil, err
		}
		keys = append(keys, key)
	}
	return newSigner(keys, now)
}

func deriveKey(secret []byte) (*ecdsa.PrivateKey, error) {
	for i := byte(0); i < 8; i++ { // a scalar out of range is astronomically rare
		d, err := hkdf.Key(sha256.New, secret, []byte{i}, "gatehouse identity key v1", 32)
		if err != nil {
			return nil, fmt.Errorf("derive identity key: %w", err)
		}
		if key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d); err == nil {
			return key, nil
		}
	}
	return nil, fmt.Errorf("derive identity key: no valid scalar")
}

// Rotated returns the Signer for new secrets (a changed cookie secret
// file): it signs with the key of the new first secret, and its JWKS also
// keeps each key of s that the new secrets no longer derive until
// MaxAssertionLifetime from now, when every assertion s can have signed
// has expired (DESIGN.md behaviour 5). s is unchanged.
func (s *Signer) Rotated(secrets [][]byte) (*Signer, error) {
	next, err := NewSignerFromSecrets(secrets, s.now)
	if err != nil {
		return nil, err
	}
	now := s.now()
	retire := now.Add(MaxAssertionLifetime)
	for _, k := range s.keys {
		if !k.until.IsZero() && !now.Before(k.until) {
			continue // already gone
		}
		if slices.ContainsFunc(next.keys, func(n publishedKey) bool { return n.jwk.KeyID == k.jwk.KeyID }) {
			continue
		}
		until := k.until
		if until.IsZero() || until.After(retire) {
			until = retire
		}
		next.keys = append(next.keys, publishedKey{jwk: k.jwk, until: until})
	}
	return next, nil
}

// KeyID returns the kid of the signing key.
func (s *Signer) KeyID() string { return s.keys[0].jwk.KeyID }

func newSigner(keys []*ecdsa.PrivateKey, now func() time.Time) (*Signer, error) {
	s := &Signer{now: now, cache: make(map[string]cached)}
	for _, key := range keys {
		pub := jose.JSONWebKey{Key: &key.PublicKey, Algorithm: string(jose.ES256), Use: "sig"}
		thumb, err := pub.Thumbprint(cryptoSHA256)
		if err != nil {
			return nil, fmt.Errorf("identity key thumbprint: %w", err)
		}
		pub.KeyID = base64URL(thumb)
		if slices.ContainsFunc(s.keys, func(k publishedKey) bool { return k.jwk.KeyID == pub.KeyID }) {
			continue // the same secret on two lines
		}
		s.keys = append(s.keys, publishedKey{jwk: pub})
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: keys[0], KeyID: s.keys[0].jwk.KeyID}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return nil, fmt.Errorf("identity signer: %w", err)
	}
	s.signer = signer
	return s, nil
}

// JWKS returns the JSON Web Key Set with the public keys: the signing key,
// the keys of the other secrets, and retired keys until their assertions
// have expired.
func (s *Signer) JWKS() []byte {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jwks != nil && now.Before(s.jwksUntil) {
		return s.jwks
	}
	set := jose.JSONWebKeySet{}
	s.jwksUntil = now.Add(24 * time.Hour)
	for _, k := range s.keys {
		if k.until.IsZero() {
			set.Keys = append(set.Keys, k.jwk)
			continue
		}
		if now.Before(k.until) {
			set.Keys = append(set.Keys, k.jwk)
			if k.until.Before(s.jwksUntil) {
				s.jwksUntil = k.until
			}
		}
	}
	b, err := json.Marshal(set)
	if err != nil { // public ECDSA keys always encode
		return []byte(`{"keys":[]}`)
	}
	s.jwks = b
	return b
}

// Assertion returns a JWT for id, issued by issuer (the external origin) for
// audience, valid for MaxAssertionLifetime. It returns the token and its
// expiry.
func (s *Signer) Assertion(id Identity, issuer, audience string) (string, time.Time, error) {
	now := s.now()
	key := cacheKey(id, issuer, audience)
	s.mu.Lock()
	c, ok := s.cache[key]
	s.mu.Unlock()
	if ok && now.Add(reuseMargin).Before(c.expiry) {
		return c.token, c.expiry, nil
	}
	tok, exp, err := s.Sign(id, issuer, audience, MaxAssertionLifetime)
	if err != nil {
		return "", time.Time{}, err
	}
	s.mu.Lock()
	if len(s.cache) >= maxCached {
		clear(s.cache)
	}
	s.cache[key] = cached{token: tok, expiry: exp}
	s.mu.Unlock()
	return tok, exp, nil
}

// Sign makes a new JWT for id without using the cache. lifetime is capped at
// MaxAssertionLifetime.
func (s *Signer) Sign(id Identity, issuer, audience string, lifetime time.Duration) (string, time.Time, error) {
	lifetime = min(lifetime, MaxAssertionLifetime)
	now := s.now().Truncate(time.Second)
	exp := now.Add(lifetime)
	groups := id.Groups
	if groups == nil {
		groups = []string{}
	}
	payload, err := json.Marshal(Claims{
		Issuer:    issuer,
		Audience:  audience,
		Subject:   id.Subject,
		Email:     id.VerifiedEmail(),
		Groups:    groups,
		IssuedAt:  now.Unix(),
		NotBefore: now.Unix(),
		Expiry:    exp.Unix(),
	})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("encode assertion: %w", err)
	}
	jws, err := s.signer.Sign(payload)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign assertion: %w", err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("serialize assertion: %w", err)
	}
	return tok, exp, nil
}

// cacheKey covers everything an assertion says about the user: the
// subject, the email as the assertion carries it (VerifiedEmail, so an
// unverified address never shares a token with a verified one) and the
// groups, plus issuer and audience. Each part is length-prefixed, so no
// choice of claim values can make two different identities collide.
func cacheKey(id Identity, issuer, audience string) string {
	email := id.VerifiedEmail()
	n := len(issuer) + len(audience) + len(id.Subject) + len(email) + 4*(5+len(id.Groups))
	for _, g := range id.Groups {
		n += len(g)
	}
	b := make([]byte, 0, n)
	b = appendField(b, issuer)
	b = appendField(b, audience)
	b = appendField(b, id.Subject)
	b = appendField(b, email)
	b = binary.AppendUvarint(b, uint64(len(id.Groups)))
	for _, g := range id.Groups {
		b = appendField(b, g)
	}
	return string(b)
}

func appendField(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}
