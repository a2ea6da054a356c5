package authz_test

import (
	"testing"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/authz"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/identity"
)

func TestDecide(t *testing.T) {
	t.Parallel()
	user := func(email string, verified bool, groups ...string) identity.Identity {
		return identity.Identity{Subject: "s", Email: email, EmailVerified: verified, Groups: groups}
	}
	tests := []struct {
		name     string
		spec     authz.Spec
		id       identity.Identity
		wantRule string // empty means allowed
	}{
		{name: "no rules admits anyone", id: user("", false)},
		{name: "email listed", spec: authz.Spec{AllowedEmails: []string{"ann@example.com"}}, id: user("ann@example.com", true)},
		{name: "email case-insensitive", spec: authz.Spec{AllowedEmails: []string{"Ann@Example.com"}}, id: user("aNN@EXAMPLE.COM", true)},
		{name: "email not listed", spec: authz.Spec{AllowedEmails: []string{"ann@example.com"}}, id: user("bob@example.com", true), wantRule: authz.RuleEmails},
		{name: "unverified email refused", spec: authz.Spec{AllowedEmails: []string{"ann@example.com"}}, id: user("ann@example.com", false), wantRule: authz.RuleEmails},
		{name: "no email refused", spec: authz.Spec{AllowedEmailDomains: []string{"example.com"}}, id: user("", true), wantRule: authz.RuleDomains},
		{name: "domain", spec: authz.Spec{AllowedEmailDomains: []string{"example.com"}}, id: user("bob@example.com", true)},
		{name: "domain case-insensitive", spec: authz.Spec{AllowedEmailDomains: []string{"EXAMPLE.com"}}, id: user("bob@Example.COM", true)},
		{name: "domain suffix attack", spec: authz.Spec{AllowedEmailDomains: []string{"example.com"}}, id: user("bob@example.com.evil.org", true), wantRule: authz.RuleDomains},
		{name: "subdomain not admitted", spec: authz.Spec{AllowedEmailDomains: []string{"example.com"}}, id: user("bob@sub.example.com", true), wantRule: authz.RuleDomains},
		{name: "lookalike prefix", spec: authz.Spec{AllowedEmailDomains: []string{"example.com"}}, id: user("bob@evilexample.com", true), wantRule: authz.RuleDomains},
		{name: "quoted at sign", spec: authz.Spec{AllowedEmailDomains: []string{"example.com"}}, id: user(`"bob@example.com"@evil.org`, true), wantRule: authz.RuleDomains},
		{name: "two at signs", spec: authz.Spec{AllowedEmailDomains: []string{"example.com"}}, id: user("eve@evil.org@example.com", true), wantRule: authz.RuleDomains},
		{name: "two at signs listed email", spec: authz.Spec{AllowedEmails: []string{"ann@example.com"}}, id: user("x@ann@example.com", true), wantRule: authz.RuleEmails},
		{name: "display name", spec: authz.Spec{AllowedEmailDomains: []string{"example.com"}}, id: user("Eve <eve@example.com>", true), wantRule: authz.RuleDomains},
		{name: "comment", spec: authz.Spec{AllowedEmailDomains: []string{"example.com"}}, id: user("eve@example.com (x)", true), wantRule: authz.RuleDomains},
		{name: "unverified domain refused", spec: authz.Spec{AllowedEmailDomains: []string{"example.com"}}, id: user("bob@example.com", false), wantRule: authz.RuleDomains},
		{name: "email or domain: email admits", spec: authz.Spec{AllowedEmails: []string{"x@other.org"}, AllowedEmailDomains: []string{"example.com"}}, id: user("x@other.org", true)},
		{name: "email or domain: domain admits", spec: authz.Spec{AllowedEmails: []string{"x@other.org"}, AllowedEmailDomains: []string{"example.com"}}, id: user("y@example.com", true)},
		{name: "email or domain: neither admits", spec: authz.Spec{AllowedEmails: []string{"x@other.org"}, AllowedEmailDomains: []string{"example.com"}}, id: user("y@evil.org", true), wantRule: authz.RuleEmails},
		{name: "group listed", spec: authz.Spec{AllowedGroups: []string{"team-a"}}, id: user("", false, "team-b", "team-a")},
		{name: "group missing", spec: authz.Spec{AllowedGroups: []string{"team-a"}}, id: user("", false, "team-b"), wantRule: authz.RuleGroups},
		{name: "group case-sensitive", spec: authz.Spec{AllowedGroups: []string{"team-a"}}, id: user("", false, "Team-A"), wantRule: authz.RuleGroups},
		{name: "both gates pass", spec: authz.Spec{AllowedEmailDomains: []string{"example.com"}, AllowedGroups: []string{"g"}}, id: user("a@example.com", true, "g")},
		{name: "both gates: group fails", spec: authz.Spec{AllowedEmailDomains: []string{"example.com"}, AllowedGroups: []string{"g"}}, id: user("a@example.com", true, "h"), wantRule: authz.RuleGroups},
		{name: "both gates: email fails", spec: authz.Spec{AllowedEmailDomains: []string{"example.com"}, AllowedGroups: []string{"g"}}, id: user("a@evil.org", true, "g"), wantRule: authz.RuleDomains},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := authz.New(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			d := p.Decide(tc.id)
			if d.Allowed != (tc.wantRule == "") || d.FailedRule != tc.wantRule {
				t.Errorf("Decide = %+v, want rule %q", d, tc.wantRule)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		spec authz.Spec
	}{
		{"email without at", authz.Spec{AllowedEmails: []string{"ann"}}},
		{"email without domain", authz.Spec{AllowedEmails: []string{"ann@"}}},
		{"email with two at signs", authz.Spec{AllowedEmails: []string{"eve@evil.org@example.com"}}},
		{"domain with at", authz.Spec{AllowedEmailDomains: []string{"@example.com"}}},
		{"domain with leading dot", authz.Spec{AllowedEmailDomains: []string{".example.com"}}},
		{"bad regexp", authz.Spec{SkipAuthPaths: []string{"(unclosed"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := authz.New(tc.spec); err == nil {
				t.Error("New accepted an invalid spec")
			}
		})
	}
}

func TestSkip(t *testing.T) {
	t.Parallel()
	p, err := authz.New(authz.Spec{SkipAuthPaths: []string{`^/healthz$`, `^/public/`, `\.(css|js|png)$`}})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"/healthz": true, "/healthz/x": false, "/public/a.css": true, "/admin": false, "/x/public/": false,
		"/app.js": true, "/admin;.css": false, "/admin;x=1/a.css": false, "/public/;/admin": false, "/public/a;b": false,
	} {
		if got := p.Skip(path); got != want {
			t.Errorf("Skip(%q) = %v, want %v", path, got, want)
		}
	}
}
