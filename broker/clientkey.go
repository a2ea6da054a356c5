package broker

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

// Client authentication with a private key: private_key_jwt (OIDC Core 9),
// the JWT client assertion of RFC 7523 2.2 and 3.
const (
	// methodPrivateKeyJWT is the method's name in discovery's
	// *_auth_methods_supported (OIDC Core 9, RFC 8414 2).
	methodPrivateKeyJWT = "private_key_jwt"
	// assertionType is client_assertion_type for a JWT (RFC 7523 2.2).
	assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// assertionLifetime is how long an assertion is good for. The broker
	// makes one per request and sends it at once; a short life limits what
	// one seen in transit or in an IdP's logs allows.
	assertionLifetime = 60 * time.Second
	// minRSABits is the smallest RSA key the broker signs with (NIST SP
	// 800-57 part 1: 2048 bits for 112-bit security).
	minRSABits = 2048
)

// errClientKey wraps every reason a key is refused. Its messages name the
// key's type, size or curve, never its material.
var errClientKey = errors.New("client key")

// parseClientKey reads a PEM private key, PKCS #8, PKCS #1 (RSA) or SEC 1
// (EC), and picks the JWS algorithm it signs with: RS256 for RSA keys of at
// least 2048 bits, ES256 or ES384 for EC keys on P-256 or P-384. It refuses
// every other key, and encrypted PEM. An EC PARAMETERS block before the
// key, as openssl ecparam writes it, is skipped.
func parseClientKey(data []byte) (crypto.Signer, jose.SignatureAlgorithm, error) {
	var block *pem.Block
	for rest := data; ; {
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, "", fmt.Errorf("%w: no PEM private key", errClientKey)
		}
		if block.Type != "EC PARAMETERS" {
			break
		}
	}
	if _, encrypted := block.Headers["DEK-Info"]; encrypted || block.Type == "ENCRYPTED PRIVATE KEY" {
		return nil, "", fmt.Errorf("%w: the PEM block is encrypted; store the key unencrypted in the Secret", errClientKey)
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, "", fmt.Errorf("%w: a PEM block of type %q, want PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY", errClientKey, block.Type)
	}
	if err != nil {
		// x509's errors say little more than this, and nothing a log
		// should hold.
		return nil, "", fmt.Errorf("%w: the %s block does not parse", errClientKey, block.Type)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if n := k.N.BitLen(); n < minRSABits {
			return nil, "", fmt.Errorf("%w: a %d-bit RSA key; at least %d bits are required", errClientKey, n, minRSABits)
		}
		return k, jose.RS256, nil
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return k, jose.ES256, nil
		case elliptic.P384():
			return k, jose.ES384, nil
		}
		return nil, "", fmt.Errorf("%w: an EC key on %s; P-256 or P-384 are supported", errClientKey, k.Curve.Params().Name)
	default:
		return nil, "", fmt.Errorf("%w: a %T; RSA or EC keys are supported", errClientKey, key)
	}
}

// clientKey is a provider's private key, ready to sign client assertions.
type clientKey struct {
	signer jose.Signer
	alg    jose.SignatureAlgorithm
	kid    string
}

// newClientKey parses a PEM private key (parseClientKey) into a signer
// whose assertions carry kid, or, when kid is empty, thumbprintKeyID of
// the public key.
func newClientKey(data []byte, kid string) (*clientKey, error) {
	key, alg, err := parseClientKey(data)
	if err != nil {
		return nil, err
	}
	if kid == "" {
		if kid, err = thumbprintKeyID(key.Public()); err != nil {
			return nil, err
		}
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errClientKey, err)
	}
	return &clientKey{signer: signer, alg: alg, kid: kid}, nil
}

// thumbprintKeyID is the RFC 7638 JWK thumbprint of a public key, SHA-256
// and base64url-encoded (RFC 7638 3): the kid an IdP that was given the
// key as a JWK without one can match it by.
func thumbprintKeyID(pub crypto.PublicKey) (string, error) {
	jwk := jose.JSONWebKey{Key: pub}
	sum, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("%w: thumbprint: %w", errClientKey, err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// assertion signs a client assertion for clientID (OIDC Core 9, RFC 7523
// 3): iss and sub the client, aud the IdP's token endpoint, a random jti
// so that the IdP can refuse a replay, iat now and exp assertionLifetime
// later.
//
// aud is the token endpoint also for the revocation endpoint: OIDC Core 9
// names the token endpoint, RFC 7523 3 lets the authorization server
// decide, and discovery has no field that names another audience; the
// IdPs that accept private_key_jwt at their revocation endpoint accept
// the token endpoint there too.
func (k *clientKey) assertion(clientID, tokenEndpoint string, now time.Time) (string, error) {
	return jwt.Signed(k.signer).Claims(jwt.Claims{
		Issuer:   clientID,
		Subject:  clientID,
		Audience: jwt.Audience{tokenEndpoint},
		ID:       rand.Text(),
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(assertionLifetime)),
	}).Serialize()
}

// acceptsKey reports whether an endpoint takes a client assertion signed
// with alg, by what discovery listed: its auth methods must include
// private_key_jwt and its signing algorithms alg. An unlisted list
// constrains nothing (RFC 8414 2 defines no default for either).
func acceptsKey(at endpoint, alg jose.SignatureAlgorithm) error {
	if len(at.methods) > 0 && !slices.Contains(at.methods, methodPrivateKeyJWT) {
		return fmt.Errorf("the identity provider does not accept %s at %s (it lists %q)", methodPrivateKeyJWT, at.url, at.methods)
	}
	if len(at.signingAlgs) > 0 && !slices.Contains(at.signingAlgs, string(alg)) {
		return fmt.Errorf("the client key signs with %s, which the identity provider does not accept at %s (it lists %q)", alg, at.url, at.signingAlgs)
	}
	return nil
}

// keySlot holds a provider's parsed key, so that a key is parsed once per
// version of its Secret rather than on every request.
type keySlot struct {
	// mu guards the fields below.
	mu sync.Mutex
	// version is the resourceVersion of the Secret key was parsed from.
	version string
	key     *clientKey
}

// clientKey returns provider p's key from its Secret in the broker's
// namespace, parsed again whenever the Secret changed, so that a rotated
// key signs the next request. A missing or unusable key is a 503 whose
// cause names the Secret and its key.
func (s *Server) clientKey(p *controllers.Provider) (*clientKey, error) {
	ref := p.ClientKeyRef
	sec, err := s.objects.secret(ref.Name)
	if err != nil {
		return nil, unavailable("the client key cannot be read", fmt.Errorf("secret %s/%s: %w", s.cfg.Namespace, ref.Name, err))
	}
	slot := s.keys[p.Name]
	slot.mu.Lock()
	defer slot.mu.Unlock()
	if slot.key != nil && slot.version == sec.ResourceVersion {
		return slot.key, nil
	}
	v := sec.Data[ref.Key]
	if len(v) == 0 {
		return nil, unavailable("the client key cannot be read", fmt.Errorf("secret %s/%s has no key %q", s.cfg.Namespace, ref.Name, ref.Key))
	}
	key, err := newClientKey(v, p.ClientKeyID)
	if err != nil {
		return nil, unavailable("the client key cannot be used", fmt.Errorf("secret %s/%s key %q: %w", s.cfg.Namespace, ref.Name, ref.Key, err))
	}
	slot.version, slot.key = sec.ResourceVersion, key
	return key, nil
}
