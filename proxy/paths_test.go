package proxy

import (
	"net/http/httptest"
	"path"
	"strings"
	"testing"
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
		if !normalizePath(r) {
			t.Fatalf("absolute path %q refused", p)
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
