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

// Signer signs identity assertions with an ES256 key made when the proxy
// starts, and publishes the public half as a JWKS. Signatures are made by
// go-jose. Assertions are cached per identity, issuer and audience and reused
// while they have more than a few minutes left, which keeps ECDSA signing off
// the common request path.
type Signer struct {
	signer jose.Signer
	jwks   []byte
	now    func() time.Time

	mu    sync.Mutex // guards cache
	cache map[string]cached
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
	return newSigner(key, now)
}

// NewSignerFromSecret derives the P-256 key from secret with HKDF-SHA256,
// so every replica that shares the secret (the cookie secret) signs with
// the same key and publishes the same JWKS: a page token from one pod
// verifies against jwks.json fetched through any other.
func NewSignerFromSecret(secret []byte, now func() time.Time) (*Signer, error) {
	for i := byte(0); i < 8; i++ { // a scalar out of range is astronomically rare
		d, err := hkdf.Key(sha256.New, secret, []byte{i}, "gatehouse identity key v1", 32)
		if err != nil {
			return nil, fmt.Errorf("derive identity key: %w", err)
		}
		if key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d); err == nil {
			return newSigner(key, now)
		}
	}
	return nil, fmt.Errorf("derive identity key: no valid scalar")
}

func newSigner(key *ecdsa.PrivateKey, now func() time.Time) (*Signer, error) {
	pub := jose.JSONWebKey{Key: &key.PublicKey, Algorithm: string(jose.ES256), Use: "sig"}
	thumb, err := pub.Thumbprint(cryptoSHA256)
	if err != nil {
		return nil, fmt.Errorf("identity key thumbprint: %w", err)
	}
	pub.KeyID = base64URL(thumb)
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: pub.KeyID}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return nil, fmt.Errorf("identity signer: %w", err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
	if err != nil {
		return nil, fmt.Errorf("encode jwks: %w", err)
	}
	return &Signer{signer: signer, jwks: jwks, now: now, cache: make(map[string]cached)}, nil
}

// JWKS returns the JSON Web Key Set with the public key.
func (s *Signer) JWKS() []byte { return s.jwks }

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
