package identity_test

import (
	"net/http"
	"net/mail"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/identity"
)

func TestIsAddrSpec(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want bool
	}{
		{"ann@example.com", true},
		{"Ann.Lee+tag@Sub.Example.COM", true},
		{"o'brien@example.ie", true},
		{"jörg@例え.jp", true},
		{"a@b", true},
		{"", false},
		{"ann", false},
		{"@example.com", false},
		{"ann@", false},
		{"eve@evil.org@example.com", false},
		{`"eve@evil.org"@example.com`, false},
		{`"ann"@example.com`, false},
		{"Eve <eve@example.com>", false},
		{"<eve@example.com>", false},
		{"eve@example.com (comment)", false},
		{"eve@[127.0.0.1]", false},
		{"eve@example.com,bob@example.com", false},
		{"eve @example.com", false},
		{"eve@example.com\n", false},
		{".eve@example.com", false},
		{"eve.@example.com", false},
		{"e..ve@example.com", false},
		{"eve@example..com", false},
		{"eve@example.com.", false},
		{"eve\\@x@example.com", false},
		{"eve@exa\x00mple.com", false},
		{"eve@\xffexample.com", false},
	}
	for _, tc := range tests {
		if got := identity.IsAddrSpec(tc.in); got != tc.want {
			t.Errorf("IsAddrSpec(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestMultiAtEmailNotForwarded: an address with two "@" reaches the app
// neither in the headers nor in the assertion (DESIGN.md behaviour 4).
func TestMultiAtEmailNotForwarded(t *testing.T) {
	t.Parallel()
	id := identity.Identity{Subject: "eve", Email: "eve@evil.org@example.com", EmailVerified: true}
	h := http.Header{}
	identity.SetHeaders(h, id, "tok")
	if got := h.Get(identity.HeaderEmail); got != "" {
		t.Errorf("%s = %q, want empty", identity.HeaderEmail, got)
	}
	s, err := identity.NewSigner(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := s.Sign(id, "https://a", "up", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if p := string(jws.UnsafePayloadWithoutVerification()); strings.Contains(p, "evil.org") {
		t.Errorf("assertion carries the address: %s", p)
	}
}

// FuzzIsAddrSpec: whatever IsAddrSpec accepts has exactly one "@", no
// byte an HTTP header or a comma list could trip on, and is read by
// net/mail (written apart) as that same single address, so the proxy and an
// app's mail library cannot disagree about its domain.
func FuzzIsAddrSpec(f *testing.F) {
	for _, s := range []string{
		"ann@example.com", "eve@evil.org@example.com", `"eve@evil.org"@example.com`, "Eve <eve@example.com>",
		"eve@example.com (x)", "eve@[127.0.0.1]", "a.b@c.d", ".a@b", "a@b.", "jörg@例え.jp", "a@b,c@d", "a\r\n@b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !identity.IsAddrSpec(s) {
			return
		}
		if n := strings.Count(s, "@"); n != 1 {
			t.Fatalf("IsAddrSpec(%q) accepted %d at signs", s, n)
		}
		if strings.ContainsAny(s, " \t\r\n\x00\",;<>()[]\\") {
			t.Fatalf("IsAddrSpec(%q) accepted a separator or control character", s)
		}
		a, err := mail.ParseAddress(s)
		if err != nil {
			t.Fatalf("IsAddrSpec(%q) accepted what net/mail refuses: %v", s, err)
		}
		if a.Name != "" || a.Address != s {
			t.Fatalf("IsAddrSpec(%q) accepted what net/mail reads as %q <%s>", s, a.Name, a.Address)
		}
	})
}
