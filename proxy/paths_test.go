package proxy

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/authz"
)

func TestRemoveDotSegments(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"/", "/"},
		{"/a/b", "/a/b"},
		{"/a/./b", "/a/b"},
		{"/a/../b", "/b"},
		{"/public/../admin", "/admin"},
		{"/a/b/..", "/a/"},
		{"/a/b/.", "/a/b/"},
		{"/..", "/"},
		{"/../..", "/"},
		{"/a//b/../c", "/a//c"},
		{"/a/", "/a/"},
		{"/a.b/c..d/...", "/a.b/c..d/..."},
	}
	for _, tc := range tests {
		if got := removeDotSegments(tc.in); got != tc.want {
			t.Errorf("removeDotSegments(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzNormalizePath: whatever the request path, the normalised path is
// absolute, has no "." or ".." segment, is stable, and (without empty
// segments) leads where path.Clean does.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/public/../admin", "/a/./b/../../c", "/%2e%2e/x", "//x/../y", "/a/b/.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if p == "" || p[0] != '/' {
			return
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.URL.Path = p
		if ok, _ := normalizePath(r); !ok {
			// Refused on purpose: backslashes, and dot segments with path
			// parameters, which an upstream may resolve otherwise.
			dotParams := false
			for _, seg := range strings.Split(p, "/") {
				name, _, params := strings.Cut(seg, ";")
				dotParams = dotParams || (params && (name == "." || name == ".."))
			}
			if !strings.Contains(p, `\`) && !dotParams {
				t.Fatalf("absolute path %q refused", p)
			}
			return
		}
		got := r.URL.Path
		if got == "" || got[0] != '/' {
			t.Fatalf("%q normalised to non-absolute %q", p, got)
		}
		for _, seg := range strings.Split(got, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("%q normalised to %q, which keeps a dot segment", p, got)
			}
		}
		if again := removeDotSegments(got); again != got {
			t.Fatalf("not stable: %q -> %q -> %q", p, got, again)
		}
		// Without empty segments (where RFC 3986 and path.Clean differ on
		// purpose), it leads where path.Clean does, up to a trailing slash.
		if !strings.Contains(p, "//") {
			if a, b := strings.TrimSuffix(got, "/"), strings.TrimSuffix(path.Clean(p), "/"); a != b {
				t.Fatalf("%q normalised to %q, path.Clean gives %q", p, got, path.Clean(p))
			}
		}
	})
}

// FuzzIsNavigation: only GET and HEAD can be navigations, and only when
// Accept names text/html.
func FuzzIsNavigation(f *testing.F) {
	f.Add("GET", "text/html")
	f.Add("GET", "*/*")
	f.Add("POST", "text/html")
	f.Add("GET", "text/html;q=0")
	f.Fuzz(func(t *testing.T, method, accept string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Method = method
		r.Header.Set("Accept", accept)
		nav := isNavigation(r)
		if nav && method != "GET" && method != "HEAD" {
			t.Fatalf("%s counted as a navigation", method)
		}
		if nav && !strings.Contains(strings.ToLower(accept), "text/html") {
			t.Fatalf("Accept %q counted as a navigation", accept)
		}
	})
}

// FuzzSkipAuthDecision feeds raw request targets through the same steps
// serveHTTP takes (request parsing, normalizePath, Policy.Skip). Whatever
// passes without a session must be public however the app resolves the path
// it receives: with path parameters cut off each segment (servlet
// containers), percent-decoded, slashes and backslashes merged, and dot
// segments resolved. The resolver below is written apart from the proxy's.
func FuzzSkipAuthDecision(f *testing.F) {
	policy, err := authz.New(authz.Spec{SkipAuthPaths: []string{`\.(css|js|png)$`, `^/public/`, `^/healthz$`}})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		"/public/app.css", "/admin;.css", "/admin%3B.css", "/public/..;/admin", "/public/../admin", "/public/%2e%2e/admin",
		"/public/x;/../admin", "/public//../admin", "/healthz", "/healthz;x", "/public/a%2F..%2F..%2Fadmin", "/a/..%2Fadmin.css",
		"http://app.example/public/x", "/public/%5C..%5Cadmin", "*", "/public/.%2e/admin", "/admin/;.js",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: app.example\r\n\r\n")))
		if err != nil {
			return
		}
		if ok, mayBePublic := normalizePath(r); !ok || !mayBePublic || !policy.Skip(r.URL.Path) {
			return
		}
		forwarded := r.URL.EscapedPath()
		resolved, ok := servletResolve(forwarded)
		if !ok {
			t.Fatalf("target %q skipped auth, but its forwarded path %q does not decode", target, forwarded)
		}
		if !policy.Skip(resolved) {
			t.Fatalf("target %q skipped auth; the app may resolve the forwarded %q as %q, which is not public", target, forwarded, resolved)
		}
	})
}

// servletResolve reads an escaped path as a lenient app server might: each
// segment loses its ";" parameters and is percent-decoded, "/" and "\"
// inside it split it further, empty and "." segments go, ".." removes the
// previous one.
func servletResolve(escaped string) (string, bool) {
	var out []string
	segs := strings.Split(strings.TrimPrefix(escaped, "/"), "/")
	trailing := false
	for _, seg := range segs {
		name, _, _ := strings.Cut(seg, ";")
		dec, err := url.PathUnescape(name)
		if err != nil {
			return "", false
		}
		for _, part := range strings.FieldsFunc(dec, func(r rune) bool { return r == '/' || r == '\\' }) {
			switch part {
			case ".":
			case "..":
				if len(out) > 0 {
					out = out[:len(out)-1]
				}
			default:
				out = append(out, part)
			}
		}
		trailing = dec == "" || dec == "." || dec == ".." || strings.HasSuffix(dec, "/")
	}
	p := "/" + strings.Join(out, "/")
	if trailing && len(out) > 0 {
		p += "/"
	}
	return p, true
}
