package controllers

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/gatehouse-dev/gatehouse/proxy"
)

// errInvalidAnnotation marks a bad annotation value; the reconciler turns
// it into a Warning Event and changes nothing.
var errInvalidAnnotation = errors.New("invalid annotation")

// Rollout modes.
const (
	RolloutAuto   = "auto"
	RolloutManual = "manual"
)

// Policy is what an Ingress's annotations ask for.
type Policy struct {
	Enabled             bool
	Provider            string // empty: the default provider
	ProviderSecret      string // a Secret in the Ingress's namespace
	AllowedGroups       []string
	AllowedEmails       []string
	AllowedEmailDomains []string
	SkipAuthPaths       []string
	SessionStore        string // empty: the provider's
	Scopes              []string
	PassAccessToken     bool
	Rollout             string
	ExternalScheme      string // empty: from spec.tls
	// SidecarResources are the annotation's quantities, nil when unset.
	SidecarResources *corev1.ResourceRequirements `json:",omitempty"`
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// parsePolicy reads the gatehouse.dev annotations. Every error wraps
// errInvalidAnnotation and names the key; unknown gatehouse.dev keys are
// errors too, so a typo never silently weakens a rule.
func parsePolicy(ann map[string]string) (Policy, error) {
	p := Policy{Rollout: RolloutAuto}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w %q: %s", errInvalidAnnotation, key, fmt.Sprintf(format, args...)))
	}
	for key, v := range ann {
		if !strings.HasPrefix(key, AnnotationPrefix) {
			continue
		}
		switch key {
		case AnnEnabled:
			b, err := strconv.ParseBool(v)
			if err != nil {
				bad(key, "%q is not true or false", v)
			}
			p.Enabled = b
		case AnnProvider:
			if !dnsLabel.MatchString(v) {
				bad(key, "%q is not a provider name", v)
			}
			p.Provider = v
		case AnnProviderSecret:
			if !dnsLabel.MatchString(v) && !isSubdomain(v) {
				bad(key, "%q is not a Secret name", v)
			}
			p.ProviderSecret = v
		case AnnAllowedGroups:
			p.AllowedGroups = splitComma(v)
		case AnnAllowedEmails:
			p.AllowedEmails = splitComma(v)
			checkPolicy(key, proxy.Config{AllowedEmails: p.AllowedEmails}, bad)
		case AnnAllowedEmailDomains:
			p.AllowedEmailDomains = splitComma(v)
			checkPolicy(key, proxy.Config{AllowedEmailDomains: p.AllowedEmailDomains}, bad)
		case AnnSkipAuthPaths:
			p.SkipAuthPaths = splitPatterns(v)
			checkPolicy(key, proxy.Config{SkipAuthPaths: p.SkipAuthPaths}, bad)
		case AnnSessionStore:
			switch v {
			case "cookie", "redis":
				p.SessionStore = v
			default:
				bad(key, "%q is not cookie or redis", v)
			}
		case AnnScopes:
			p.Scopes = strings.Fields(strings.ReplaceAll(v, ",", " "))
			if !containsString(p.Scopes, "openid") {
				bad(key, "%q must include openid", v)
			}
		case AnnPassAccessToken:
			b, err := strconv.ParseBool(v)
			if err != nil {
				bad(key, "%q is not true or false", v)
			}
			p.PassAccessToken = b
		case AnnRollout:
			switch v {
			case RolloutAuto, RolloutManual:
				p.Rollout = v
			default:
				bad(key, "%q is not auto or manual", v)
			}
		case AnnExternalScheme:
			switch v {
			case SchemeHTTPS, SchemeHTTP:
				p.ExternalScheme = v
			default:
				bad(key, "%q is not https or http", v)
			}
		case AnnSidecarResources:
			r, err := parseResources(v)
			if err != nil {
				bad(key, "%v", err)
			}
			p.SidecarResources = &r
		default:
			bad(key, "unknown Gatehouse annotation (see the README's annotation reference)")
		}
	}
	return p, errors.Join(errs...)
}

// checkPolicy validates one policy annotation with the proxy's own rules.
func checkPolicy(key string, c proxy.Config, bad func(key, format string, args ...any)) {
	if err := c.ValidatePolicy(); err != nil {
		bad(key, "%s", oneLine(err))
	}
}

// splitComma splits a comma-separated list, trimming spaces.
func splitComma(v string) []string {
	var out []string
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// splitPatterns splits skip-auth-paths: one regular expression a line, or
// comma-separated when the value is one line (write patterns that contain
// a comma on lines of their own).
func splitPatterns(v string) []string {
	if !strings.Contains(v, "\n") {
		return splitComma(v)
	}
	var out []string
	for line := range strings.SplitSeq(v, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

func isSubdomain(v string) bool {
	if len(v) > 253 {
		return false
	}
	for part := range strings.SplitSeq(v, ".") {
		if !dnsLabel.MatchString(part) {
			return false
		}
	}
	return true
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
