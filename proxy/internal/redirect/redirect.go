// Package redirect decides where a browser may be sent after login.
//
// It owns one rule (DESIGN.md behaviour 3): a post-login target is a path on
// this site, used exactly as given. It does not build absolute URLs, decode
// paths for the caller or know about hosts; anything that is not plainly a
// local path becomes "/".
package redirect

import (
	"net/url"
	"unicode"
	"unicode/utf8"
)

// Fallback is the target used whenever the requested one is not safe.
const Fallback = "/"

// SafePath returns raw when it is a local path that every browser resolves on
// this site, and Fallback otherwise.
//
// A safe path starts with exactly one "/" followed by a character other than
// "/" or "\", and has no control characters or backslashes. The same rule must
// also hold for the percent-decoded form, so "/%2F%2Fevil.example" (which some
// frameworks decode before redirecting) is refused too. SafePath never returns
// the decoded form: a path that passes is returned byte for byte.
func SafePath(raw string) string {
	if !isLocalPath(raw) {
		return Fallback
	}
	decoded, err := url.PathUnescape(raw)
	if err != nil || !isLocalPath(decoded) {
		return Fallback
	}
	return raw
}

// isLocalPath reports whether s is "/" or starts with "/" followed by a
// character other than "/" or "\", and is valid UTF-8 free of control
// characters and backslashes. Browsers drop tabs and newlines from URLs
// (WHATWG URL "remove all ASCII tab or newline"), so "/\t/evil.example"
// would become "//evil.example": control characters are refused outright.
func isLocalPath(s string) bool {
	if s == "" || s[0] != '/' {
		return false
	}
	if len(s) > 1 && (s[1] == '/' || s[1] == '\\') {
		return false
	}
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r == '\\' || unicode.IsControl(r) || r == utf8.RuneError {
			return false
		}
		// Unicode line and paragraph separators and other invisible format
		// characters are not controls in Go's tables but are stripped or
		// folded by some user agents.
		if unicode.Is(unicode.Zl, r) || unicode.Is(unicode.Zp, r) || unicode.Is(unicode.Cf, r) {
			return false
		}
	}
	return true
}
