package identity_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/identity"
)

func TestScrub(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		header string
		remove bool
	}{
		{"user", "X-Auth-Request-User", true},
		{"email lower case", "x-auth-request-email", true},
		{"groups with underscores", "X_Auth_Request_Groups", true},
		{"mixed separators", "X-Auth_Request-Preferred_Username", true},
		{"any x-auth-request header", "X-Auth-Request-Anything", true},
		{"assertion", "X-Gatehouse-Identity", true},
		{"assertion underscores", "X_GATEHOUSE_IDENTITY", true},
		{"any gatehouse header", "X-Gatehouse-Debug", true},
		{"forwarded access token", "X-Forwarded-Access-Token", true},
		{"forwarded access token underscores", "x_forwarded_access_token", true},
		{"oauth2-proxy user", "X-Forwarded-User", true},
		{"oauth2-proxy email", "X-Forwarded-Email", true},
		{"authorization kept", "Authorization", false},
		{"x-forwarded-for kept", "X-Forwarded-For", false},
		{"similar name kept", "X-Auth-Requested", false},
		{"ordinary kept", "Accept", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			h[tc.header] = []string{"spoofed"} // raw key, as a server may keep it
			h.Set("Accept", "text/html")
			identity.Scrub(h)
			_, present := h[tc.header]
			if present == tc.remove {
				t.Errorf("after Scrub, header %q present = %v, want %v", tc.header, present, !tc.remove)
			}
			if tc.header != "Accept" && h.Get("Accept") != "text/html" {
				t.Errorf("Scrub removed an unrelated header")
			}
		})
	}
}

func TestSetHeaders(t *testing.T) {
	t.Parallel()
	h := http.Header{}
	identity.SetHeaders(h, identity.Identity{
		Subject: "u1", Email: "a@example.com", EmailVerified: true, PreferredUsername: "ann\r\nX-Evil: 1",
		Groups: []string{"a", "b", "users,admins", "50%"},
	}, "tok")
	want := http.Header{
		"X-Auth-Request-User":               {"u1"},
		"X-Auth-Request-Email":              {"a@example.com"},
		"X-Auth-Request-Preferred-Username": {"annX-Evil: 1"},
		"X-Auth-Request-Groups":             {"a,b,users%2Cadmins,50%25"},
		"X-Gatehouse-Identity":              {"tok"},
	}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
}

func TestUnverifiedEmailNotForwarded(t *testing.T) {
	t.Parallel()
	h := http.Header{}
	id := identity.Identity{Subject: "u1", Email: "ceo@example.com", EmailVerified: false}
	identity.SetHeaders(h, id, "tok")
	if got := h.Get("X-Auth-Request-Email"); got != "" {
		t.Errorf("unverified email forwarded: %q", got)
	}
	s, err := identity.NewSigner(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := s.Sign(id, "https://a", "up", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	jws, _ := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if strings.Contains(string(jws.UnsafePayloadWithoutVerification()), "ceo@") {
		t.Error("unverified email in the assertion")
	}
}

func TestAssertionVerifiesWithJWKS(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	s, err := identity.NewSigner(func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	id := identity.Identity{Subject: "u1", Email: "a@example.com", EmailVerified: true, Groups: []string{"g"}}
	tok, exp, err := s.Assertion(id, "https://app.example", "http://127.0.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	if got := exp.Sub(now); got != identity.MaxAssertionLifetime {
		t.Errorf("lifetime = %v, want %v", got, identity.MaxAssertionLifetime)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(s.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 || set.Keys[0].IsPublic() != true || set.Keys[0].Algorithm != "ES256" {
		t.Fatalf("jwks = %s", s.JWKS())
	}
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if jws.Signatures[0].Header.KeyID != set.Keys[0].KeyID {
		t.Errorf("kid %q not in jwks", jws.Signatures[0].Header.KeyID)
	}
	payload, err := jws.Verify(set.Keys[0])
	if err != nil {
		t.Fatalf("verify with jwks: %v", err)
	}
	var c identity.Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	want := identity.Claims{
		Issuer: "https://app.example", Audience: "http://127.0.0.1:8080", Subject: "u1",
		Email: "a@example.com", Groups: []string{"g"},
		IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: now.Add(5 * time.Minute).Unix(),
	}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}

	// Another signer's key must not verify it.
	other, err := identity.NewSigner(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	var otherSet jose.JSONWebKeySet
	if err := json.Unmarshal(other.JWKS(), &otherSet); err != nil {
		t.Fatal(err)
	}
	if _, err := jws.Verify(otherSet.Keys[0]); err == nil {
		t.Error("assertion verified with a foreign key")
	}
}

func TestAssertionCache(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	s, err := identity.NewSigner(func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	id := identity.Identity{Subject: "u1"}
	a, _, _ := s.Assertion(id, "https://a", "up")
	b, _, _ := s.Assertion(id, "https://a", "up")
	if a != b {
		t.Error("fresh assertion not reused")
	}
	c, _, _ := s.Assertion(identity.Identity{Subject: "u2"}, "https://a", "up")
	if c == a {
		t.Error("another user got the same assertion")
	}
	d, _, _ := s.Assertion(id, "https://b", "up")
	if d == a {
		t.Error("another issuer got the same assertion")
	}
	now = now.Add(2*time.Minute + time.Second)
	e, exp, _ := s.Assertion(id, "https://a", "up")
	if e == a {
		t.Error("assertion with under 3 minutes left was reused")
	}
	if exp.Sub(now) < 4*time.Minute {
		t.Errorf("re-issued assertion expires in %v", exp.Sub(now))
	}
}

// FuzzScrub: after Scrub no header that an app could read as an identity
// header is left, whatever its spelling, and other headers stay.
func FuzzScrub(f *testing.F) {
	for _, s := range []string{"X-Auth-Request-User", "x_auth_request_email", "X-Gatehouse-Identity", "X_Forwarded_Access_Token", "Accept", "X-Auth-Requested"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		h := http.Header{}
		h[name] = []string{"v"}
		identity.Scrub(h)
		_, kept := h[name]
		n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
		reserved := strings.HasPrefix(n, "x-auth-request-") || strings.HasPrefix(n, "x-gatehouse-") ||
			n == "x-forwarded-access-token" || n == "x-forwarded-user" || n == "x-forwarded-email" ||
			n == "x-forwarded-groups" || n == "x-forwarded-preferred-username"
		if reserved && kept {
			t.Fatalf("reserved header %q survived Scrub", name)
		}
		if !reserved && !kept {
			t.Fatalf("ordinary header %q removed", name)
		}
	})
}

func TestSignerFromSecretIsShared(t *testing.T) {
	t.Parallel()
	a, err := identity.NewSignerFromSecret([]byte(strings.Repeat("a", 32)), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := identity.NewSignerFromSecret([]byte(strings.Repeat("a", 32)), time.Now)
	c, _ := identity.NewSignerFromSecret([]byte(strings.Repeat("c", 32)), time.Now)
	if string(a.JWKS()) != string(b.JWKS()) {
		t.Error("two replicas with one secret publish different keys")
	}
	if string(a.JWKS()) == string(c.JWKS()) {
		t.Error("different secrets give the same key")
	}
	tok, _, err := a.Sign(identity.Identity{Subject: "u"}, "https://a", "up", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jws.Verify(set.Keys[0]); err != nil {
		t.Errorf("a token from one replica does not verify with another's JWKS: %v", err)
	}
}

// TestAssertionCacheKeyCoversEverythingSaid: identities that differ only
// in what the assertion says about them never share a cached token.
func TestAssertionCacheKeyCoversEverythingSaid(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name string
		a, b identity.Identity
	}{
		{"email verified or not", identity.Identity{Subject: "u", Email: "u@example.com", EmailVerified: true}, identity.Identity{Subject: "u", Email: "u@example.com"}},
		{"field boundary", identity.Identity{Subject: "u\x00v@example.com"}, identity.Identity{Subject: "u", Email: "v@example.com", EmailVerified: true}},
		{"group boundary", identity.Identity{Subject: "u", Groups: []string{"a\x01b"}}, identity.Identity{Subject: "u", Groups: []string{"a", "b"}}},
		{"groups in the subject", identity.Identity{Subject: "u\x00\x00g", Groups: nil}, identity.Identity{Subject: "u", Groups: []string{"g"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := identity.NewSigner(func() time.Time { return now })
			if err != nil {
				t.Fatal(err)
			}
			first, _, err := s.Assertion(tc.a, "https://a", "up")
			if err != nil {
				t.Fatal(err)
			}
			second, _, err := s.Assertion(tc.b, "https://a", "up")
			if err != nil {
				t.Fatal(err)
			}
			if first == second {
				t.Fatalf("%+v got the assertion cached for %+v", tc.b, tc.a)
			}
			jws, err := jose.ParseSignedCompact(second, []jose.SignatureAlgorithm{jose.ES256})
			if err != nil {
				t.Fatal(err)
			}
			var c identity.Claims
			if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &c); err != nil {
				t.Fatal(err)
			}
			if c.Subject != tc.b.Subject || c.Email != tc.b.VerifiedEmail() {
				t.Errorf("assertion says sub %q email %q, want %q %q", c.Subject, c.Email, tc.b.Subject, tc.b.VerifiedEmail())
			}
		})
	}
}

// kids returns the key ids a JWKS publishes, in order.
func kids(t *testing.T, jwks []byte) []string {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwks, &set); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range set.Keys {
		if !k.IsPublic() {
			t.Fatalf("private key in the JWKS: %s", jwks)
		}
		out = append(out, k.KeyID)
	}
	return out
}

// TestSignerRotation: the signing key follows the first secret; the JWKS
// publishes the keys of every secret line, so a reloaded and a restarted
// replica publish the same keys, plus a key that left the file until the
// assertions it signed have expired (DESIGN.md behaviour 5).
func TestSignerRotation(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	a, b, c := []byte(strings.Repeat("a", 32)), []byte(strings.Repeat("b", 32)), []byte(strings.Repeat("c", 32))
	kidOf := func(secrets ...[]byte) string {
		s, err := identity.NewSignerFromSecrets(secrets, clock)
		if err != nil {
			t.Fatal(err)
		}
		return s.KeyID()
	}
	ka, kb, kc := kidOf(a), kidOf(b), kidOf(c)

	first, err := identity.NewSignerFromSecrets([][]byte{a}, clock)
	if err != nil {
		t.Fatal(err)
	}
	old, _, err := first.Assertion(identity.Identity{Subject: "u"}, "https://a", "up")
	if err != nil {
		t.Fatal(err)
	}
	// The new secret goes first, the old one stays as the second line.
	reloaded, err := first.Rotated([][]byte{b, a})
	if err != nil {
		t.Fatal(err)
	}
	restarted, err := identity.NewSignerFromSecrets([][]byte{b, a}, clock)
	if err != nil {
		t.Fatal(err)
	}
	if reloaded.KeyID() != kb {
		t.Errorf("signing key after rotation %q, want the new secret's %q", reloaded.KeyID(), kb)
	}
	if diff := cmp.Diff([]string{kb, ka}, kids(t, reloaded.JWKS())); diff != "" {
		t.Errorf("reloaded JWKS (-want +got):\n%s", diff)
	}
	if string(reloaded.JWKS()) != string(restarted.JWKS()) {
		t.Errorf("reloaded and restarted replicas publish different keys:\n%s\n%s", reloaded.JWKS(), restarted.JWKS())
	}
	tok, _, err := reloaded.Assertion(identity.Identity{Subject: "u"}, "https://a", "up")
	if err != nil {
		t.Fatal(err)
	}
	if tok == old {
		t.Error("the assertion cached under the old key is still handed out")
	}
	if jws, _ := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256}); jws.Signatures[0].Header.KeyID != kb {
		t.Errorf("assertion signed with %q, want %q", jws.Signatures[0].Header.KeyID, kb)
	}

	// Straight to another secret: the keys that left the file stay
	// published until what they signed has expired.
	swapped, err := reloaded.Rotated([][]byte{c})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{kc, kb, ka}, kids(t, swapped.JWKS())); diff != "" {
		t.Errorf("JWKS right after the swap (-want +got):\n%s", diff)
	}
	now = now.Add(identity.MaxAssertionLifetime - time.Second)
	if got := kids(t, swapped.JWKS()); len(got) != 3 {
		t.Errorf("JWKS before the old assertions expired: %v", got)
	}
	now = now.Add(time.Second)
	if diff := cmp.Diff([]string{kc}, kids(t, swapped.JWKS())); diff != "" {
		t.Errorf("JWKS after the old assertions expired (-want +got):\n%s", diff)
	}
}
