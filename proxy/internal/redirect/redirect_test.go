package redirect_test

import (
	"bufio"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/redirect"
)

func TestSafePath(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, want string }{
		{"root", "/", "/"},
		{"path kept", "/reports?q=1", "/reports?q=1"},
		{"fragment kept", "/reports#top", "/reports#top"},
		{"encoded query kept as is", "/search?q=a%20b&x=%2F", "/search?q=a%20b&x=%2F"},
		{"unicode path", "/caf\u00e9", "/caf\u00e9"},
		{"empty", "", "/"},
		{"relative", "reports", "/"},
		{"protocol-relative", "//evil.example", "/"},
		{"backslash second", "/\\evil.example", "/"},
		{"backslash later", "/a\\b", "/"},
		{"absolute", "https://evil.example", "/"},
		{"scheme without slashes", "https:evil.example", "/"},
		{"javascript", "javascript:alert(1)", "/"},
		{"encoded slashes", "/%2F%2Fevil.example", "/"},
		{"encoded backslash", "/%5Cevil.example", "/"},
		{"encoded slash lower case", "/%2f%2fevil.example", "/"},
		{"tab trick", "/\t/evil.example", "/"},
		{"newline trick", "/\n/evil.example", "/"},
		{"carriage return", "/\r/evil.example", "/"},
		{"encoded tab", "/%09/evil.example", "/"},
		{"nul", "/a\x00b", "/"},
		{"del", "/a\x7fb", "/"},
		{"line separator", "/\u2028/evil.example", "/"},
		{"zero width", "/\u200b/evil.example", "/"},
		{"invalid utf8", "/\xff", "/"},
		{"bad escape", "/%zz", "/"},
		{"triple slash", "///evil.example", "/"},
		{"leading space", " /reports", "/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := redirect.SafePath(tc.in); got != tc.want {
				t.Errorf("SafePath(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestOpenRedirectPayloads replays a list of known open-redirect payloads;
// each must either fall back to "/" or stay on the site.
func TestOpenRedirectPayloads(t *testing.T) {
	t.Parallel()
	f, err := os.Open("testdata/open-redirect-payloads.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		payload, err := unquote(line)
		if err != nil {
			t.Fatalf("payload %q: %v", line, err)
		}
		n++
		if got := redirect.SafePath(payload); got != "/" {
			t.Errorf("SafePath(%q) = %q, want the fallback", payload, got)
		}
	}
	if n < 20 {
		t.Fatalf("only %d payloads read", n)
	}
}

// unquote turns the \t, \n, \r and \\ escapes of the payload file into bytes.
func unquote(s string) (string, error) {
	r := strings.NewReplacer(`\t`, "\t", `\n`, "\n", `\r`, "\r", `\0`, "\x00", `\\`, `\`)
	return r.Replace(s), nil
}

func FuzzSafePath(f *testing.F) {
	for _, s := range []string{"/", "/a?b=c", "//evil.example", "/\\evil", "https://evil", "/%2F%2Fx", "/\t/x", "/%5c%5cx"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := redirect.SafePath(in)
		if out != "/" && out != in {
			t.Fatalf("SafePath(%q) = %q: neither the input nor the fallback", in, out)
		}
		if !staysOnSite(out) {
			t.Fatalf("SafePath(%q) = %q leaves the site", in, out)
		}
	})
}

// staysOnSite is the oracle, written apart from SafePath: it resolves the
// target the way a browser would (after dropping tabs and newlines, reading
// backslashes as slashes, and once more after percent-decoding) against a
// base URL and checks that the host never changes.
func staysOnSite(target string) bool {
	base, _ := url.Parse("https://site.example/start")
	forms := []string{target}
	if dec, err := url.PathUnescape(target); err == nil {
		forms = append(forms, dec)
	}
	for _, form := range forms {
		browser := strings.Map(func(r rune) rune {
			switch r {
			case '\t', '\n', '\r':
				return -1
			case '\\':
				return '/'
			}
			return r
		}, form)
		browser = strings.TrimLeft(browser, " \x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f")
		u, err := url.Parse(browser)
		if err != nil {
			// Unparseable targets are only acceptable as the fallback.
			if target != "/" {
				return false
			}
			continue
		}
		if got := base.ResolveReference(u); got.Host != "site.example" || got.Scheme != "https" {
			return false
		}
	}
	return true
}
