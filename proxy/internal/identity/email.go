package identity

import (
	"strings"
	"unicode/utf8"
)

// IsAddrSpec reports whether s is one plain email address: a dot-atom local
// part, exactly one "@", and a dot-atom domain (RFC 5322 3.4.1, with the
// UTF-8 of RFC 6532). Quoted local parts, domain literals, comments,
// display names and anything with a second "@" are refused, so that
// "eve@evil.org@example.com" or `"eve@evil.org"@example.com` can never be
// read as an address in example.com by the proxy and as another one by the
// app (DESIGN.md behaviour 4). It allocates nothing.
func IsAddrSpec(s string) bool {
	at := strings.IndexByte(s, '@')
	if at < 0 {
		return false
	}
	return isDotAtom(s[:at]) && isDotAtom(s[at+1:]) && utf8.ValidString(s)
}

// isDotAtom reports whether s is 1*atext *("." 1*atext). A second "@" is
// not atext, so it fails here.
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	prevDot := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if prevDot {
				return false
			}
			prevDot = true
			continue
		}
		prevDot = false
		if !isAtext(c) {
			return false
		}
	}
	return true
}

// isAtext reports whether the byte c may appear in an atom: RFC 5322 atext,
// or any byte of a multi-byte UTF-8 sequence (RFC 6532 3.2).
func isAtext(c byte) bool {
	switch {
	case c >= utf8.RuneSelf:
		return true
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}
