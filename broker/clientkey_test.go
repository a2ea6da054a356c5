package broker

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse-dev/gatehouse/proxy/idptest"
)

// Test keys, generated once: RSA generation is slow.
var (
	testKeysOnce             sync.Once
	testRSA2048, testRSA1024 *rsa.PrivateKey
)

func rsaKeys(t *testing.T) (rsa2048, rsa1024 *rsa.PrivateKey) {
	t.Helper()
	testKeysOnce.Do(func() {
		var err error
		if testRSA2048, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if testRSA1024, err = rsa.GenerateKey(rand.Reader, 1024); err != nil {
			panic(err)
		}
	})
	return testRSA2048, testRSA1024
}

func ecKey(t *testing.T, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pkcs8(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemOf("PRIVATE KEY", der)
}

func sec1(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemOf("EC PRIVATE KEY", der)
}

func pkcs1(key *rsa.PrivateKey) []byte {
	return pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))
}

func TestParseClientKey(t *testing.T) {
	t.Parallel()
	rsa2048, rsa1024 := rsaKeys(t)
	p256, p384 := ecKey(t, elliptic.P256()), ecKey(t, elliptic.P384())
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// openssl ecparam -genkey writes the curve's parameters first.
	params := pemOf("EC PARAMETERS", []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07})
	tests := []struct {
		name string
		pem  []byte
		pub  crypto.PublicKey // nil: refused
		alg  jose.SignatureAlgorithm
	}{
		{"RSA, PKCS #8", pkcs8(t, rsa2048), rsa2048.Public(), jose.RS256},
		{"RSA, PKCS #1", pkcs1(rsa2048), rsa2048.Public(), jose.RS256},
		{"P-256, SEC 1", sec1(t, p256), p256.Public(), jose.ES256},
		{"P-256, SEC 1 after EC PARAMETERS", append(params, sec1(t, p256)...), p256.Public(), jose.ES256},
		{"P-256, PKCS #8", pkcs8(t, p256), p256.Public(), jose.ES256},
		{"P-384, SEC 1", sec1(t, p384), p384.Public(), jose.ES384},
		{"P-384, PKCS #8", pkcs8(t, p384), p384.Public(), jose.ES384},

		{"RSA 1024, PKCS #1", pkcs1(rsa1024), nil, ""},
		{"RSA 1024, PKCS #8", pkcs8(t, rsa1024), nil, ""},
		{"P-521", sec1(t, ecKey(t, elliptic.P521())), nil, ""},
		{"P-224, PKCS #8", pkcs8(t, ecKey(t, elliptic.P224())), nil, ""},
		{"Ed25519", pkcs8(t, ed), nil, ""},
		{"not PEM", []byte("-----not a key-----"), nil, ""},
		{"only EC PARAMETERS", params, nil, ""},
		{"a certificate", pemOf("CERTIFICATE", []byte{0x30, 0x00}), nil, ""},
		{"a public key", func() []byte {
			der, _ := x509.MarshalPKIXPublicKey(p256.Public())
			return pemOf("PUBLIC KEY", der)
		}(), nil, ""},
		{"encrypted PKCS #8", pemOf("ENCRYPTED PRIVATE KEY", []byte{0x30, 0x00}), nil, ""},
		{"encrypted legacy PEM", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: x509.MarshalPKCS1PrivateKey(rsa2048)}), nil, ""},
		{"PKCS #1 labelled PKCS #8", pemOf("PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsa2048)), nil, ""},
		{"garbage", pemOf("EC PRIVATE KEY", []byte("not DER at all")), nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			key, alg, err := parseClientKey(tc.pem)
			if tc.pub == nil {
				if err == nil || !errors.Is(err, errClientKey) {
					t.Fatalf("parseClientKey = %s, %v; want an errClientKey", alg, err)
				}
				// The reason names the key's kind, never its material.
				if block, _ := pem.Decode(tc.pem); block != nil && len(block.Bytes) > 8 {
					enc := base64.StdEncoding.EncodeToString(block.Bytes)
					if strings.Contains(err.Error(), enc[:12]) {
						t.Errorf("the error quotes the key: %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if alg != tc.alg {
				t.Errorf("alg %s, want %s", alg, tc.alg)
			}
			if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(tc.pub) {
				t.Errorf("parsed another key")
			}
		})
	}
}

// TestThumbprintKeyID checks the default kid against RFC 7638 3.1's own
// example key and thumbprint.
func TestThumbprintKeyID(t *testing.T) {
	t.Parallel()
	n, err := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	if err != nil {
		t.Fatal(err)
	}
	got, err := thumbprintKeyID(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537})
	if err != nil {
		t.Fatal(err)
	}
	if want := "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Errorf("thumbprint %s, want RFC 7638's %s", got, want)
	}
}

// verifyAssertion checks a client assertion's signature with pub and
// returns its protected header and its claims, every one of them.
func verifyAssertion(t *testing.T, assertion string, pub crypto.PublicKey) (jose.Header, map[string]any) {
	t.Helper()
	tok, err := jwt.ParseSigned(assertion, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.ES384})
	if err != nil {
		t.Fatalf("parse the assertion: %v", err)
	}
	var raw json.RawMessage
	if err := tok.Claims(pub, &raw); err != nil {
		t.Fatalf("verify the assertion with the public key: %v", err)
	}
	var claims map[string]any
	d := json.NewDecoder(strings.NewReader(string(raw)))
	d.UseNumber()
	if err := d.Decode(&claims); err != nil {
		t.Fatal(err)
	}
	return tok.Headers[0], claims
}

// wantClaims are the claims of an assertion for clientID at tokenEndpoint
// made at now, with the jti it has: exactly these (OIDC Core 9, RFC 7523
// 3), an exp 60 s after iat.
func wantClaims(clientID, tokenEndpoint string, now time.Time, jti any) map[string]any {
	return map[string]any{
		"iss": clientID, "sub": clientID, "aud": tokenEndpoint, "jti": jti,
		"iat": json.Number(strconv.FormatInt(now.Unix(), 10)), "exp": json.Number(strconv.FormatInt(now.Add(60*time.Second).Unix(), 10)),
	}
}

func TestAssertion(t *testing.T) {
	t.Parallel()
	rsa2048, _ := rsaKeys(t)
	p384 := ecKey(t, elliptic.P384())
	now := time.Unix(1_750_000_000, 0)
	for _, tc := range []struct {
		name, kid, wantKid string
		pem                []byte
		pub                crypto.PublicKey
		alg                jose.SignatureAlgorithm
	}{
		{name: "RSA, default kid", pem: pkcs1(rsa2048), pub: rsa2048.Public(), alg: jose.RS256},
		{name: "P-384, configured kid", kid: "signing-2025", wantKid: "signing-2025", pem: sec1(t, p384), pub: p384.Public(), alg: jose.ES384},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			key, err := newClientKey(tc.pem, tc.kid)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.wantKid
			if want == "" {
				if want, err = thumbprintKeyID(tc.pub); err != nil {
					t.Fatal(err)
				}
			}
			var jtis []string
			for range 2 {
				a, err := key.assertion("gatehouse", "https://idp.example.com/oauth/token", now)
				if err != nil {
					t.Fatal(err)
				}
				h, claims := verifyAssertion(t, a, tc.pub)
				if h.Algorithm != string(tc.alg) || h.KeyID != want || h.ExtraHeaders["typ"] != "JWT" {
					t.Errorf("header alg %s kid %q typ %v, want %s %q JWT", h.Algorithm, h.KeyID, h.ExtraHeaders["typ"], tc.alg, want)
				}
				jti, _ := claims["jti"].(string)
				if len(jti) < 16 || slices.Contains(jtis, jti) {
					t.Errorf("jti %q is short or repeated (%q)", jti, jtis)
				}
				jtis = append(jtis, jti)
				if diff := cmp.Diff(wantClaims("gatehouse", "https://idp.example.com/oauth/token", now, jti), claims); diff != "" {
					t.Errorf("claims (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestAcceptsKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name             string
		methods, algs    []string
		alg              jose.SignatureAlgorithm
		ok               bool
		mentionsInReason string
	}{
		{name: "nothing listed", alg: jose.ES256, ok: true},
		{name: "method listed", methods: []string{"client_secret_basic", "private_key_jwt"}, alg: jose.RS256, ok: true},
		{name: "method not listed", methods: []string{"client_secret_basic", "client_secret_jwt"}, alg: jose.RS256, mentionsInReason: "private_key_jwt"},
		{name: "alg listed", algs: []string{"RS256", "ES256"}, alg: jose.ES256, ok: true},
		{name: "ES384 listed", methods: []string{"private_key_jwt"}, algs: []string{"ES384"}, alg: jose.ES384, ok: true},
		{name: "alg not listed", algs: []string{"RS256", "PS256"}, alg: jose.ES256, mentionsInReason: "ES256"},
		{name: "only the other curve", algs: []string{"ES256"}, alg: jose.ES384, mentionsInReason: "ES384"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := acceptsKey(endpoint{url: "https://idp.example.com/token", methods: tc.methods, signingAlgs: tc.algs}, tc.alg)
			if (err == nil) != tc.ok {
				t.Fatalf("acceptsKey = %v, want ok %v", err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), tc.mentionsInReason) {
				t.Errorf("%v does not name %s", err, tc.mentionsInReason)
			}
		})
	}
}

// TestDiscoverKeyAuth: discovery reads each endpoint's methods and
// algorithms; the revocation endpoint without lists of its own takes the
// token endpoint's.
func TestDiscoverKeyAuth(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                   string
		doc                    map[string]any
		revMethods, revAlgs    []string
		tokenMethods, tokenAlg []string
	}{
		{
			name:         "token endpoint's lists for both",
			doc:          map[string]any{"token_endpoint_auth_methods_supported": []string{"private_key_jwt"}, "token_endpoint_auth_signing_alg_values_supported": []string{"RS256"}},
			tokenMethods: []string{"private_key_jwt"}, tokenAlg: []string{"RS256"},
			revMethods: []string{"private_key_jwt"}, revAlgs: []string{"RS256"},
		},
		{
			name: "revocation's own",
			doc: map[string]any{
				"token_endpoint_auth_signing_alg_values_supported":      []string{"RS256"},
				"revocation_endpoint_auth_methods_supported":            []string{"private_key_jwt"},
				"revocation_endpoint_auth_signing_alg_values_supported": []string{"ES256"},
			},
			tokenAlg:   []string{"RS256"},
			revMethods: []string{"private_key_jwt"}, revAlgs: []string{"ES256"},
		},
		{name: "none", doc: map[string]any{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			idp := idptest.New(t)
			idp.SetDiscoveryHook(func(doc map[string]any) {
				for k, v := range tc.doc {
					doc[k] = v
				}
			})
			ep, err := discover(t.Context(), idp.URL)
			if err != nil {
				t.Fatal(err)
			}
			want := &endpoints{
				token:      endpoint{url: idp.URL + "/token", methods: tc.tokenMethods, signingAlgs: tc.tokenAlg},
				revocation: endpoint{url: idp.URL + "/revoke", methods: tc.revMethods, signingAlgs: tc.revAlgs},
			}
			if diff := cmp.Diff(want, ep, cmp.AllowUnexported(endpoints{}, endpoint{})); diff != "" {
				t.Errorf("discover (-want +got):\n%s", diff)
			}
		})
	}
}
