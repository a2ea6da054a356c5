package proxy

import (
	"net/http"
	"strings"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/identity"
)

// removeDotSegments applies RFC 3986 5.2.4 to an absolute path. Unlike
// path.Clean it keeps a trailing slash and repeated slashes, so only "." and
// ".." segments change, which is what an upstream server would resolve.
func removeDotSegments(p string) string {
	if !strings.Contains(p, ".") {
		return p
	}
	segs := strings.Split(p, "/")[1:]
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
			continue
		}
		if last {
			out = append(out, "")
		}
	}
	return "/" + strings.Join(out, "/")
}

// normalizePath rewrites r's path without dot segments (DESIGN.md behaviour
// 13). The decoded path is what skip-auth patterns see and, re-encoded, what
// goes upstream, so "/public/%2e%2e/admin" is "/admin" for both. It reports
// false for a path that is not absolute. public reports whether the path
// may be exempt from authentication at all: not when any segment had path
// parameters (";", also "%3B"), even one that a ".." then removed.
func normalizePath(r *http.Request) (ok, public bool) {
	p := r.URL.Path
	if p == "" || p[0] != '/' || strings.ContainsRune(p, '\\') {
		return false, false
	}
	public = strings.IndexByte(p, ';') < 0
	// Servlet containers read "..;x" as ".." (path parameters): a request
	// with such a segment could pass as public and be resolved upstream.
	for seg := range strings.SplitSeq(p, "/") {
		if name, _, params := strings.Cut(seg, ";"); params && (name == "." || name == "..") {
			return false, false
		}
	}
	if clean := removeDotSegments(p); clean != p {
		r.URL.Path = clean
		r.URL.RawPath = ""
	}
	return true, public
}

// isNavigation reports whether r is a browser navigation: a GET or HEAD
// whose Accept lists text/html explicitly (*/* alone does not count).
func isNavigation(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	for _, accept := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(accept, ",") {
			media, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(media), "text/html") {
				continue
			}
			if q := qValue(params); q == "0" || q == "0.0" || q == "0.00" || q == "0.000" {
				continue
			}
			return true
		}
	}
	return false
}

func qValue(params string) string {
	for p := range strings.SplitSeq(params, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// stripCookies removes the cookies for which ours is true from r's Cookie
// headers, keeping every other cookie byte for byte.
func stripCookies(r *http.Request, ours func(name string) bool) {
	values := r.Header.Values("Cookie")
	if len(values) == 0 {
		return
	}
	var kept []string
	changed := false
	for _, v := range values {
		for part := range strings.SplitSeq(v, ";") {
			pair := strings.TrimSpace(part)
			if pair == "" {
				continue
			}
			name, _, _ := strings.Cut(pair, "=")
			if ours(strings.TrimSpace(name)) {
				changed = true
				continue
			}
			kept = append(kept, pair)
		}
	}
	if !changed && len(values) == 1 {
		return
	}
	if len(kept) == 0 {
		r.Header.Del("Cookie")
		return
	}
	r.Header.Set("Cookie", strings.Join(kept, "; "))
}

// scrubHeaders removes the client headers an app must never take from a
// client: identity look-alikes (identity.IsReserved) and path overrides,
// which some frameworks (Symfony before 3.4.14, Zend, IIS rewrite rules)
// serve instead of the request path, so "GET /public/x" with
// "X-Original-URL: /admin" would reach /admin on a skip-auth path. It runs
// on every request.
func scrubHeaders(h http.Header) {
	for name := range h {
		if identity.IsReserved(name) || isPathOverride(name) {
			delete(h, name)
		}
	}
}

// isPathOverride reports whether name is X-Original-URL or X-Rewrite-URL,
// in any case and with "_" read as "-".
func isPathOverride(name string) bool {
	if len(name) != len("x-original-url") && len(name) != len("x-rewrite-url") {
		return false
	}
	n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	return n == "x-original-url" || n == "x-rewrite-url"
}

// upgradeAllowed reports whether r asks for no protocol switch, or for a
// WebSocket (DESIGN.md behaviour 12). Once an upstream answers 101 the proxy
// only relays bytes: an h2c upgrade would let the client send further
// requests that reach the app without a session check and with headers of
// its own choosing, so any Upgrade but a single "websocket" is refused.
func upgradeAllowed(h http.Header) bool {
	v, ok := h["Upgrade"]
	if !ok {
		return true
	}
	return len(v) == 1 && strings.EqualFold(strings.TrimSpace(v[0]), "websocket")
}
