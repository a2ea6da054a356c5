package controllers

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// annotationDoc documents one Ingress annotation for the README.
type annotationDoc struct {
	Key, Default, Meaning string
}

// annotationDocs is the annotation reference, in the README's order. A test
// checks that it names every key parsePolicy knows and that the README
// shows exactly this table.
var annotationDocs = []annotationDoc{
	{AnnEnabled, "`false`", "`\"true\"` puts Gatehouse in front of every Pod behind this Ingress's backend Services"},
	{AnnProvider, "the chart's `defaults.provider`", "which configured identity provider to use"},
	{AnnProviderSecret, "none", "a Secret in the Ingress's namespace with `issuer-url`, `client-id` and `client-secret`: a team's own IdP client"},
	{AnnAllowedGroups, "any", "comma-separated groups; a user in any of them passes this gate"},
	{AnnAllowedEmails, "any", "comma-separated email addresses; with `allowed-email-domains` one gate"},
	{AnnAllowedEmailDomains, "any", "comma-separated domains, matched exactly (`example.com` admits neither `sub.example.com` nor `example.com.evil.org`)"},
	{AnnSkipAuthPaths, "none", "regular expressions on the normalised path that pass without login; comma-separated, or one a line when a pattern contains a comma"},
	{AnnSessionStore, "the provider's", "`cookie` or `redis` (the provider must have a `sessionStore`)"},
	{AnnScopes, "the provider's", "space- or comma-separated OAuth scopes; must include `openid`"},
	{AnnPassAccessToken, "`false`", "also send `Authorization: Bearer <access token>` to the app"},
	{AnnRollout, "`auto`", "`auto` replaces existing Pods one at a time (PodDisruptionBudgets honoured); `manual` only reports them"},
	{AnnExternalScheme, "from `spec.tls`", "`https` or `http` for every host, when TLS ends outside the Ingress (a cloud load balancer's certificate)"},
	{AnnSidecarResources, "the Namespace's, else the chart's", "the sidecar's resources, e.g. `requests.memory=48Mi,limits.memory=128Mi` (keys `requests.cpu`, `requests.memory`, `limits.cpu`, `limits.memory`), within the chart's `defaults.sidecar.resourceBounds`; on a Namespace, the default for its Ingresses"},
}

// AnnotationReference renders the annotation reference as Markdown.
func AnnotationReference() string {
	var b strings.Builder
	b.WriteString("| annotation | default | meaning |\n| --- | --- | --- |\n")
	for _, a := range annotationDocs {
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", a.Key, a.Default, a.Meaning)
	}
	return b.String()
}

// FlagReference renders the controller's flags as Markdown.
func FlagReference() string {
	c := DefaultConfig()
	fs := flag.NewFlagSet("gatehouse controller", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.RegisterFlags(fs)
	var b strings.Builder
	b.WriteString("| flag | default | meaning |\n| --- | --- | --- |\n")
	fs.VisitAll(func(f *flag.Flag) {
		_, usage := flag.UnquoteUsage(f)
		def := ""
		if f.DefValue != "" {
			def = "`" + f.DefValue + "`"
		}
		fmt.Fprintf(&b, "| `--%s` | %s | %s |\n", f.Name, def, strings.ReplaceAll(usage, "|", `\|`))
	})
	return b.String()
}
