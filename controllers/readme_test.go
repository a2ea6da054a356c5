package controllers

import (
	"os"
	"strings"
	"testing"

	"github.com/gatehouse-dev/gatehouse/proxy"
)

// TestREADMEReferences fails when the README's annotation or controller
// flag reference and the code disagree; -update rewrites them.
func TestREADMEReferences(t *testing.T) {
	for _, sec := range []struct{ name, want string }{
		{"annotations", AnnotationReference()},
		{"controller-flags", FlagReference()},
		{"controller-metrics", MetricsReference()},
	} {
		begin := "<!-- BEGIN " + sec.name + " (generated: go test ./controllers -run TestREADMEReferences -update) -->"
		end := "<!-- END " + sec.name + " -->"
		raw, err := os.ReadFile("../README.md")
		if err != nil {
			t.Fatal(err)
		}
		readme := string(raw)
		i, j := strings.Index(readme, begin), strings.Index(readme, end)
		if i < 0 || j < i {
			t.Fatalf("README lacks the %s markers", sec.name)
		}
		got := readme[i+len(begin)+1 : j]
		if got == sec.want {
			continue
		}
		if *update {
			if err := os.WriteFile("../README.md", []byte(readme[:i+len(begin)+1]+sec.want+readme[j:]), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("README %s reference is stale; run go test ./controllers -run TestREADMEReferences -update", sec.name)
	}
}

// TestAnnotationDocsComplete: every annotation parsePolicy accepts is
// documented, and nothing else.
func TestAnnotationDocsComplete(t *testing.T) {
	t.Parallel()
	for _, a := range annotationDocs {
		if _, err := parsePolicy(map[string]string{a.Key: "x"}); err != nil && strings.Contains(err.Error(), "unknown Gatehouse annotation") {
			t.Errorf("documented annotation %s is unknown to parsePolicy", a.Key)
		}
	}
	known := []string{AnnEnabled, AnnProvider, AnnProviderSecret, AnnAllowedGroups, AnnAllowedEmails, AnnAllowedEmailDomains,
		AnnSkipAuthPaths, AnnSessionStore, AnnScopes, AnnPassAccessToken, AnnRollout, AnnExternalScheme, AnnSidecarResources}
	if len(known) != len(annotationDocs) {
		t.Errorf("%d annotations known, %d documented", len(known), len(annotationDocs))
	}
}

// TestREADMERedisRules: the ACL rules the README gives for users made by
// hand are the session store's own.
func TestREADMERedisRules(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join(proxy.RedisACLRules("gatehouse:<namespace>:"), " ")
	if !strings.Contains(string(readme), want) {
		t.Errorf("README lacks the Redis ACL rules %q", want)
	}
}
