// Package identity owns who a user is once the ID token has been verified:
// the Identity type, the identity headers sent upstream, the scrubbing of
// client-sent look-alikes, and the signed identity assertion with its JWKS.
//
// It does not verify ID tokens (oidcflow does), decide access (authz does) or
// store anything (session does).
package identity

import (
	"net/http"
	"strings"
)

// Identity is the verified description of a user, taken from the ID token and
// completed from userinfo.
type Identity struct {
	// Subject is the IdP's stable identifier for the user ("sub").
	Subject string
	// Email is the user's email address; may be empty.
	Email string
	// EmailVerified is false only when the IdP said so explicitly
	// ("email_verified": false). An absent claim counts as verified because
	// several IdPs never send it.
	EmailVerified bool
	// PreferredUsername is the "preferred_username" claim; may be empty.
	PreferredUsername string
	// Groups are the values of the configured groups claim.
	Groups []string
}

// Upstream header names (DESIGN.md behaviour 5).
const (
	HeaderUser              = "X-Auth-Request-User"
	HeaderEmail             = "X-Auth-Request-Email"
	HeaderPreferredUsername = "X-Auth-Request-Preferred-Username"
	HeaderGroups            = "X-Auth-Request-Groups"
	HeaderAssertion         = "X-Gatehouse-Identity"
)

// reserved are header names (lower case, "-" separated) that only the proxy
// may set. The oauth2-proxy names are included so that an app migrated from
// it cannot be fooled by a client that sends them.
var reserved = map[string]bool{
	"x-forwarded-access-token":       true,
	"x-forwarded-user":               true,
	"x-forwarded-email":              true,
	"x-forwarded-groups":             true,
	"x-forwarded-preferred-username": true,
}

// reservedPrefixes are header name prefixes that only the proxy may set.
var reservedPrefixes = []string{"x-auth-request-", "x-gatehouse-"}

// IsReserved reports whether a client-sent header called name must be removed
// before the request goes upstream. Names are compared lower-cased and with
// "_" read as "-", because many servers and CGI-style frameworks treat the
// two alike.
func IsReserved(name string) bool {
	// Cheap exit for the common headers: every reserved name starts with
	// "x-" (any case).
	if len(name) < 2 || (name[0] != 'x' && name[0] != 'X') || (name[1] != '-' && name[1] != '_') {
		return false
	}
	n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	if reserved[n] {
		return true
	}
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}

// Scrub removes every reserved header from h. It runs on every request,
// including those on skip-auth paths.
func Scrub(h http.Header) {
	for name := range h {
		if IsReserved(name) {
			delete(h, name)
		}
	}
}

// SetHeaders writes the identity headers for id into h, replacing any value.
// assertion is the signed X-Gatehouse-Identity JWT. Values are cleaned of
// control characters so that a strange claim cannot break the request.
//
// An email whose email_verified claim was false, or that is not a single
// addr-spec, is not sent: an app must not take an address the IdP never
// checked, or one it may parse differently, for the user's. Group names
// are joined with commas, so a comma (and the percent sign) inside a name
// is percent-encoded: "users,admins" cannot pose as two groups.
func SetHeaders(h http.Header, id Identity, assertion string) {
	h[HeaderUser] = []string{clean(id.Subject)}
	h[HeaderEmail] = []string{clean(id.VerifiedEmail())}
	h[HeaderPreferredUsername] = []string{clean(id.PreferredUsername)}
	groups := make([]string, len(id.Groups))
	for i, g := range id.Groups {
		groups[i] = groupEscaper.Replace(g)
	}
	h[HeaderGroups] = []string{clean(strings.Join(groups, ","))}
	h[HeaderAssertion] = []string{assertion}
}

var groupEscaper = strings.NewReplacer("%", "%25", ",", "%2C")

// VerifiedEmail is the email when it may be trusted, else "": the IdP did
// not say it is unverified, and it is a single addr-spec (IsAddrSpec). It
// is what email rules see and what the app receives, in the headers, the
// assertion and userinfo alike.
func (id Identity) VerifiedEmail() string {
	if !id.EmailVerified || !IsAddrSpec(id.Email) {
		return ""
	}
	return id.Email
}

// clean drops characters that are not allowed in an HTTP header value.
func clean(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return strings.Map(func(r rune) rune {
				if r < 0x20 || r == 0x7f {
					return -1
				}
				return r
			}, s)
		}
	}
	return s
}
