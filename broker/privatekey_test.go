package broker

import (
	"crypto"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/gatehouse-dev/gatehouse/controllers"
	"github.com/gatehouse-dev/gatehouse/proxy/idptest"
)

// keyedProviders renders a providers file whose one provider, keyed,
// serves namespace ns and authenticates with the private key in Secret
// clientKeyName, with clientKeyID kid unless kid is empty.
func keyedProviders(ns, kid string) string {
	s := fmt.Sprintf(`
providers:
  - name: keyed
    issuerURL: ISSUER
    clientID: gatehouse-test
    clientKeyRef: {name: %s, key: %s}
    clientSecretMode: broker
    allowedNamespaces: [%s]
`, clientKeyName, clientKeyKey, ns)
	if kid != "" {
		s += "    clientKeyID: " + kid + "\n"
	}
	return s
}

// authForm are the parameters of private_key_jwt (RFC 7523 2.2).
var authForm = []string{"client_id", "client_assertion_type", "client_assertion"}

// expectKeyAuth checks that the IdP got sent authenticated the client by
// private_key_jwt alone, with an assertion that pub verifies and whose
// header and claims are exactly as OIDC Core 9 and RFC 7523 3 say, made at
// now for tokenEndpoint. It returns the assertion's jti and the rest of
// the form.
func expectKeyAuth(t *testing.T, sent idpCall, pub crypto.PublicKey, alg jose.SignatureAlgorithm, kid, clientID, tokenEndpoint string, now time.Time) (string, url.Values) {
	t.Helper()
	if sent.basic || sent.form.Has("client_secret") {
		t.Errorf("the IdP got a client secret (Basic %v, form %v) besides the assertion", sent.basic, sent.form.Has("client_secret"))
	}
	if sent.form.Get("client_id") != clientID || sent.form.Get("client_assertion_type") != idptest.ClientAssertionType {
		t.Errorf("client_id %q, client_assertion_type %q", sent.form.Get("client_id"), sent.form.Get("client_assertion_type"))
	}
	h, claims := verifyAssertion(t, sent.form.Get("client_assertion"), pub)
	if h.Algorithm != string(alg) || h.KeyID != kid {
		t.Errorf("assertion alg %s kid %q, want %s %q", h.Algorithm, h.KeyID, alg, kid)
	}
	jti, _ := claims["jti"].(string)
	if jti == "" {
		t.Errorf("no jti")
	}
	if diff := cmp.Diff(wantClaims(clientID, tokenEndpoint, now, jti), claims); diff != "" {
		t.Errorf("assertion claims (-want +got):\n%s", diff)
	}
	rest := url.Values{}
	for k, v := range sent.form {
		if !slices.Contains(authForm, k) {
			rest[k] = v
		}
	}
	return jti, rest
}

// TestPrivateKeyJWT: with an RSA and with an EC key, the broker's code
// exchange, refresh and revocation authenticate the client with a client
// assertion the fake IdP verifies, and with no client secret, although
// the broker's namespace holds one.
func TestPrivateKeyJWT(t *testing.T) {
	t.Parallel()
	rsa2048, _ := rsaKeys(t)
	p256 := ecKey(t, elliptic.P256())
	for _, tc := range []struct {
		name string
		pem  []byte
		pub  crypto.PublicKey
		alg  jose.SignatureAlgorithm
		// kid is clientKeyID; empty means the thumbprint.
		kid string
	}{
		{name: "RSA, PKCS #1, clientKeyID", pem: pkcs1(rsa2048), pub: rsa2048.Public(), alg: jose.RS256, kid: "rsa-2025"},
		{name: "P-256, SEC 1, thumbprint", pem: sec1(t, p256), pub: p256.Public(), alg: jose.ES256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := newTenant(t, "tenant-a")
			cbA := callbackOf("a.example.com")
			w := startBroker(t, brokerOptions{
				providers: keyedProviders(a.ns, tc.kid),
				registry:  map[string]string{a.ns: redirects(controllers.BrokerRedirects{"keyed": {cbA}})},
				clientKey: tc.pem,
			})
			kid := tc.kid
			if kid == "" {
				var err error
				if kid, err = thumbprintKeyID(tc.pub); err != nil {
					t.Fatal(err)
				}
			}
			w.idp.SetClientKey(tc.pub, kid)
			w.idp.SetNow(w.clock.Now)
			tokenEndpoint := w.idp.URL + "/token"
			tok := a.token(t, audience)
			var jtis []string

			code, verifier := w.code(cbA)
			got := w.post("keyed", "token", tok, exchangeForm(code, cbA, verifier))
			if got.status != http.StatusOK {
				t.Fatalf("exchange: %d %s", got.status, got.body)
			}
			jti, rest := expectKeyAuth(t, expectRelayed(t, w, got, "/token"), tc.pub, tc.alg, kid, w.idp.ClientID, tokenEndpoint, w.clock.Now())
			jtis = append(jtis, jti)
			if diff := cmp.Diff(url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cbA}, "code_verifier": {verifier}}, rest); diff != "" {
				t.Errorf("the exchange's form (-want +got):\n%s", diff)
			}
			refresh, _ := got.json["refresh_token"].(string)

			// A later request, at a later time: a new assertion.
			w.clock.Set(w.clock.Now().Add(90 * time.Second))
			got = w.post("keyed", "token", tok, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}})
			if got.status != http.StatusOK {
				t.Fatalf("refresh: %d %s", got.status, got.body)
			}
			jti, _ = expectKeyAuth(t, expectRelayed(t, w, got, "/token"), tc.pub, tc.alg, kid, w.idp.ClientID, tokenEndpoint, w.clock.Now())
			jtis = append(jtis, jti)
			rotated, _ := got.json["refresh_token"].(string)

			// Revocation: aud is the token endpoint there too.
			got = w.post("keyed", "revoke", tok, url.Values{"token": {rotated}, "token_type_hint": {"refresh_token"}})
			if got.status != http.StatusOK {
				t.Fatalf("revoke: %d %s", got.status, got.body)
			}
			jti, rest = expectKeyAuth(t, expectRelayed(t, w, got, "/revoke"), tc.pub, tc.alg, kid, w.idp.ClientID, tokenEndpoint, w.clock.Now())
			jtis = append(jtis, jti)
			if diff := cmp.Diff(url.Values{"token": {rotated}, "token_type_hint": {"refresh_token"}}, rest); diff != "" {
				t.Errorf("the revocation's form (-want +got):\n%s", diff)
			}
			if !slices.Contains(w.idp.Revoked(), rotated) {
				t.Errorf("the IdP did not revoke the refresh token")
			}
			if slices.Sort(jtis); len(slices.Compact(jtis)) != 3 {
				t.Errorf("jtis %q repeat", jtis)
			}

			logs := w.log.String()
			block, _ := pem.Decode(tc.pem)
			if der := base64.StdEncoding.EncodeToString(block.Bytes); strings.Contains(logs, der[:40]) || strings.Contains(logs, der[len(der)-40:]) {
				t.Errorf("the logs contain the private key")
			}
			w.rec.log.mu.Lock()
			for _, c := range w.rec.log.calls {
				if a := c.form.Get("client_assertion"); a != "" && strings.Contains(logs, a) {
					t.Errorf("the logs contain a client assertion")
				}
			}
			w.rec.log.mu.Unlock()
			if !strings.Contains(logs, `"tokenAuth":"private_key_jwt"`) {
				t.Errorf("the discovery log line does not say private_key_jwt:\n%s", logs)
			}
		})
	}
}

// TestPrivateKeyRotated: a new key in the Secret signs the next request,
// and the default kid follows it.
func TestPrivateKeyRotated(t *testing.T) {
	t.Parallel()
	a := newTenant(t, "tenant-a")
	cbA := callbackOf("a.example.com")
	rsa2048, _ := rsaKeys(t)
	w := startBroker(t, brokerOptions{
		providers: keyedProviders(a.ns, ""),
		registry:  map[string]string{a.ns: redirects(controllers.BrokerRedirects{"keyed": {cbA}})},
		clientKey: pkcs8(t, rsa2048),
	})
	w.idp.SetNow(w.clock.Now)
	register := func(pub crypto.PublicKey) string {
		kid, err := thumbprintKeyID(pub)
		if err != nil {
			t.Fatal(err)
		}
		w.idp.SetClientKey(pub, kid)
		return kid
	}
	register(rsa2048.Public())
	tok := a.token(t, audience)
	code, verifier := w.code(cbA)
	if got := w.post("keyed", "token", tok, exchangeForm(code, cbA, verifier)); got.status != http.StatusOK {
		t.Fatalf("before the rotation: %d %s", got.status, got.body)
	}

	next := ecKey(t, elliptic.P384())
	kid := register(next.Public())
	// The broker still signs with the Secret's old key: the IdP refuses,
	// and the broker relays that.
	if got := w.post("keyed", "token", tok, exchangeForm(code, cbA, verifier)); got.status != http.StatusUnauthorized || got.json["error"] != "invalid_client" {
		t.Fatalf("before the Secret changed: %d %s, want the IdP's 401 invalid_client", got.status, got.body)
	}
	w.setClientKey(pkcs8(t, next))
	g := gomega.NewWithT(t)
	g.Eventually(func() int {
		return w.post("keyed", "token", tok, exchangeForm(code, cbA, verifier)).status
	}).WithTimeout(10 * time.Second).Should(gomega.Equal(http.StatusOK))
	expectKeyAuth(t, w.rec.log.last(t, "/token"), next.Public(), jose.ES384, kid, w.idp.ClientID, w.idp.URL+"/token", w.clock.Now())
}

// errorLogged reports whether the broker logged, at Error, a request of
// provider keyed whose error contains each of parts.
func errorLogged(w *world, parts ...string) bool {
	for line := range strings.Lines(w.log.String()) {
		var rec struct {
			Level, Msg, Provider, Error string
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Level != "ERROR" || rec.Provider != "keyed" {
			continue
		}
		found := true
		for _, p := range parts {
			found = found && strings.Contains(rec.Error, p)
		}
		if found {
			return true
		}
	}
	return false
}

// TestPrivateKeyUnavailable: without a usable key the broker answers 503
// temporarily_unavailable, logs at Error which Secret and key are wrong
// (never the key), and sends the IdP nothing; with the key, the same
// request goes through.
func TestPrivateKeyUnavailable(t *testing.T) {
	t.Parallel()
	a := newTenant(t, "tenant-a")
	w := startBroker(t, brokerOptions{providers: keyedProviders(a.ns, "")})
	p256 := ecKey(t, elliptic.P256())
	kid, err := thumbprintKeyID(p256.Public())
	if err != nil {
		t.Fatal(err)
	}
	w.idp.SetClientKey(p256.Public(), kid)
	w.idp.SetNow(w.clock.Now)
	tok := a.token(t, audience)
	refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"rt"}}
	where := w.ns + "/" + clientKeyName
	_, rsa1024 := rsaKeys(t)
	weak := pkcs1(rsa1024)
	setSecret := func(data map[string][]byte) {
		t.Helper()
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: clientKeyName, Namespace: w.ns}}
		if err := admin.Get(t.Context(), client.ObjectKeyFromObject(s), s); err == nil {
			s.Data = data
			if err := admin.Update(t.Context(), s); err != nil {
				t.Fatal(err)
			}
			return
		}
		s.Data = data
		create(t, s)
	}
	g := gomega.NewWithT(t)
	for _, tc := range []struct {
		name   string
		secret map[string][]byte // nil: no Secret
		logged []string
	}{
		{name: "no Secret", logged: []string{"the client key cannot be read", where, "not found"}},
		{name: "no such key", secret: map[string][]byte{"other": sec1(t, p256)}, logged: []string{"the client key cannot be read", where, `has no key "` + clientKeyKey + `"`}},
		{name: "not a key", secret: map[string][]byte{clientKeyKey: []byte("not PEM")}, logged: []string{"the client key cannot be used", where, clientKeyKey, "no PEM private key"}},
		{name: "too small", secret: map[string][]byte{clientKeyKey: weak}, logged: []string{"the client key cannot be used", where, clientKeyKey, "1024-bit RSA"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.secret != nil {
				setSecret(tc.secret)
			}
			// The cache sees the Secret's change soon, not at once.
			var got response
			g.Eventually(func() bool {
				got = w.post("keyed", "token", tok, refresh)
				return errorLogged(w, tc.logged...)
			}).WithTimeout(10*time.Second).Should(gomega.BeTrue(), func() string {
				return fmt.Sprintf("the last answer %d %s; logs:\n%s", got.status, got.body, w.log.String())
			})
			if got.status != http.StatusServiceUnavailable || got.json["error"] != "temporarily_unavailable" {
				t.Errorf("%d %s, want 503 temporarily_unavailable", got.status, got.body)
			}
			if n := w.idp.TokenCalls("refresh_token"); n != 0 {
				t.Errorf("%d requests reached the IdP's token endpoint", n)
			}
		})
	}
	block, _ := pem.Decode(weak)
	if der := base64.StdEncoding.EncodeToString(block.Bytes); strings.Contains(w.log.String(), der[:40]) {
		t.Errorf("the logs contain the unusable key")
	}

	// Control: the same request with the key reaches the IdP, which
	// authenticates the client and refuses only the unknown refresh
	// token.
	setSecret(map[string][]byte{clientKeyKey: sec1(t, p256)})
	g.Eventually(func(g gomega.Gomega) {
		got := w.post("keyed", "token", tok, refresh)
		g.Expect(got.status).To(gomega.Equal(http.StatusBadRequest), "%s", got.body)
		g.Expect(got.json["error"]).To(gomega.Equal("invalid_grant"))
	}).WithTimeout(10 * time.Second).Should(gomega.Succeed())
}

// TestPrivateKeyAlgNotAccepted: an IdP whose discovery lists signing
// algorithms without the key's cannot verify its assertions: the broker
// answers 503 and logs at Error, for the provider, why, instead of
// sending the IdP an assertion it would refuse.
func TestPrivateKeyAlgNotAccepted(t *testing.T) {
	t.Parallel()
	a := newTenant(t, "tenant-a")
	p256 := ecKey(t, elliptic.P256())
	w := startBroker(t, brokerOptions{providers: keyedProviders(a.ns, ""), clientKey: sec1(t, p256)})
	w.idp.SetClientKey(p256.Public(), "")
	w.idp.SetDiscoveryHook(func(doc map[string]any) {
		doc["token_endpoint_auth_methods_supported"] = []string{"client_secret_basic", "private_key_jwt"}
		doc["token_endpoint_auth_signing_alg_values_supported"] = []string{"RS256", "PS256"}
	})
	tok := a.token(t, audience)
	got := w.post("keyed", "token", tok, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"rt"}})
	if got.status != http.StatusServiceUnavailable || got.json["error"] != "temporarily_unavailable" {
		t.Errorf("%d %s, want 503 temporarily_unavailable", got.status, got.body)
	}
	if !errorLogged(w, "cannot accept the client key", "ES256", `["RS256" "PS256"]`) {
		t.Errorf("no Error log for provider keyed naming ES256 and the IdP's algorithms:\n%s", w.log.String())
	}
	if n := w.idp.TokenCalls("refresh_token"); n != 0 {
		t.Errorf("%d requests reached the IdP's token endpoint", n)
	}
}
