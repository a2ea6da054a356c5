// Package authz decides whether an authenticated user may enter, and which
// paths need no authentication at all.
//
// A Policy is immutable; the proxy swaps in a new one when the policy file
// changes. authz does not authenticate anyone, read files or know about HTTP
// beyond the request path.
package authz

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/identity"
)

// Rule names, as the 403 JSON, the logs and the metrics give them
// (DESIGN.md behaviour 10). The email gate is RuleEmails when
// --allowed-emails is set (alone or with --allowed-email-domains), else
// RuleDomains.
const (
	RuleEmails  = "emails"
	RuleDomains = "domains"
	RuleGroups  = "groups"
)

// Decision is the outcome of Policy.Decide.
type Decision struct {
	// Allowed is true when every configured gate admits the user.
	Allowed bool
	// FailedRule names the first gate that refused the user (RuleEmails,
	// RuleDomains or RuleGroups); empty when Allowed.
	FailedRule string
	// Flags names the settings behind FailedRule, for people, such as
	// "allowed-emails/allowed-email-domains".
	Flags string
}

// Spec is the textual form of a policy, as configured.
type Spec struct {
	AllowedEmails       []string
	AllowedEmailDomains []string
	AllowedGroups       []string
	SkipAuthPaths       []string
}

// Policy is a compiled Spec.
type Policy struct {
	emails  map[string]bool
	domains map[string]bool
	groups  map[string]bool
	skip    []*regexp.Regexp
	// emailGate is the refusal of the email gate.
	emailGate Decision
}

// New compiles spec, reporting every invalid entry at once.
func New(spec Spec) (*Policy, error) {
	p := &Policy{}
	var errs []error
	for _, e := range spec.AllowedEmails {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if !identity.IsAddrSpec(e) {
			errs = append(errs, fmt.Errorf("allowed-emails: %q is not an email address (write one plain address, like ann@example.com)", e))
			continue
		}
		p.emails = addLower(p.emails, e)
	}
	for _, d := range spec.AllowedEmailDomains {
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		if strings.ContainsAny(d, "@/ ") || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") {
			errs = append(errs, fmt.Errorf("allowed-email-domains: %q is not a domain (write example.com, without @ or a leading dot)", d))
			continue
		}
		p.domains = addLower(p.domains, d)
	}
	for _, g := range spec.AllowedGroups {
		if g = strings.TrimSpace(g); g != "" {
			if p.groups == nil {
				p.groups = map[string]bool{}
			}
			p.groups[g] = true
		}
	}
	for _, s := range spec.SkipAuthPaths {
		if s == "" {
			continue
		}
		re, err := regexp.Compile(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("skip-auth-path: %q: %w", s, err))
			continue
		}
		p.skip = append(p.skip, re)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// The two settings form one gate, which people know by both names.
	p.emailGate = Decision{FailedRule: RuleDomains, Flags: "allowed-emails/allowed-email-domains"}
	if len(p.emails) > 0 {
		p.emailGate.FailedRule = RuleEmails
	}
	return p, nil
}

func addLower(m map[string]bool, s string) map[string]bool {
	if m == nil {
		m = map[string]bool{}
	}
	m[strings.ToLower(s)] = true
	return m
}

// Skip reports whether path (decoded and already normalised by the
// caller) matches a skip-auth pattern. A path with ";" in any segment never
// does (DESIGN.md behaviour 13): servlet containers read "/admin;.css" as
// "/admin", so a pattern such as `\.css$` would make the app's admin page
// public.
func (p *Policy) Skip(path string) bool {
	if strings.IndexByte(path, ';') >= 0 {
		return false
	}
	for _, re := range p.skip {
		if re.MatchString(path) {
			return true
		}
	}
	return false
}

// Decide checks id against every configured gate (DESIGN.md behaviour 10 and
// 4): the emails and email domains together form one gate, groups another;
// an unconfigured gate admits everyone. An email whose email_verified claim
// was false, or that is not a single addr-spec, never satisfies the email
// gate.
func (p *Policy) Decide(id identity.Identity) Decision {
	if len(p.emails) > 0 || len(p.domains) > 0 {
		if !p.emailAllowed(id) {
			return p.emailGate
		}
	}
	if len(p.groups) > 0 {
		ok := false
		for _, g := range id.Groups {
			if p.groups[g] {
				ok = true
				break
			}
		}
		if !ok {
			return Decision{FailedRule: RuleGroups, Flags: "allowed-groups"}
		}
	}
	return Decision{Allowed: true}
}

// emailAllowed checks the email gate. Only a verified single addr-spec
// counts (identity.VerifiedEmail), so "eve@evil.org@example.com" is in no
// domain at all.
func (p *Policy) emailAllowed(id identity.Identity) bool {
	email := strings.ToLower(id.VerifiedEmail())
	if email == "" {
		return false
	}
	if p.emails[email] {
		return true
	}
	return p.domains[email[strings.IndexByte(email, '@')+1:]]
}
