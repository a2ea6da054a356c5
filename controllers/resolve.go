package controllers

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Keys of a gatehouse.dev/provider-secret Secret.
const (
	ProviderSecretIssuerURL    = "issuer-url"
	ProviderSecretClientID     = "client-id"
	ProviderSecretClientSecret = "client-secret"
)

// problem is something wrong with an Ingress, reported as a Warning Event.
type problem struct {
	Reason  string
	Message string
}

// backend is a Service behind an enabled Ingress whose target port the
// sidecar takes over.
type backend struct {
	Service  *corev1.Service
	PortName string
}

// resolved is the decision for one Ingress.
type resolved struct {
	Enabled  bool
	Spec     sidecarSpec
	Backends []backend
	// Problems are reported; Blocked means nothing is injected at all.
	Problems []problem
	Blocked  bool
	// Provider secrets, for the reconciler's per-Ingress Secret.
	clientSecretRef *secretRef
	redisRef        *secretRef
}

type secretRef struct {
	Namespace, Name, Key string
}

// resolver turns an Ingress into a resolved decision from cached Services
// and the controller's configuration. Reading secrets is the caller's
// business; resolve only records where they are.
type resolver struct {
	reader    client.Reader // cached reads: Services
	apiReader client.Reader // uncached reads: provider-secret Secrets
	file      *FileConfig
	namespace string // the controller's own
	image     string
}

func (r *resolver) resolve(ctx context.Context, ing *networkingv1.Ingress) (resolved, error) {
	var res resolved
	block := func(reason, format string, args ...any) (resolved, error) {
		res.Blocked = true
		res.Problems = append(res.Problems, problem{reason, fmt.Sprintf(format, args...)})
		return res, nil
	}
	pol, err := parsePolicy(ing.Annotations)
	res.Enabled = pol.Enabled
	if _, asked := ing.Annotations[AnnEnabled]; asked && err != nil {
		// An unreadable "enabled" counts as enabled: a typo must not
		// switch protection off.
		res.Enabled = true
	}
	if err != nil {
		return block(ReasonInvalidAnnotation, "%v; nothing was changed", oneLine(err))
	}
	if !pol.Enabled {
		return res, nil
	}
	spec := sidecarSpec{
		Ingress:    ing.Name,
		Policy:     pol,
		PathPrefix: r.file.Defaults.PathPrefix,
		Image:      r.image,
		Resources:  r.file.Defaults.Sidecar.Resources,
		MountPath:  SecretMountPath,
	}
	var prov *Provider
	if pol.ProviderSecret != "" {
		var s corev1.Secret
		err := r.apiReader.Get(ctx, client.ObjectKey{Namespace: ing.Namespace, Name: pol.ProviderSecret}, &s)
		if apierrors.IsNotFound(err) {
			return block(ReasonUnknownProvider, "%s: Secret %q not found in namespace %s", AnnProviderSecret, pol.ProviderSecret, ing.Namespace)
		}
		if err != nil {
			return res, fmt.Errorf("read provider secret: %w", err)
		}
		spec.IssuerURL = string(s.Data[ProviderSecretIssuerURL])
		spec.ClientID = string(s.Data[ProviderSecretClientID])
		if spec.IssuerURL == "" || spec.ClientID == "" {
			return block(ReasonUnknownProvider, "%s: Secret %q needs the keys %s and %s", AnnProviderSecret, pol.ProviderSecret, ProviderSecretIssuerURL, ProviderSecretClientID)
		}
		if err := checkIssuer(spec.IssuerURL); err != nil {
			return block(ReasonUnknownProvider, "%s: %v", AnnProviderSecret, err)
		}
		if _, ok := s.Data[ProviderSecretClientSecret]; ok {
			spec.HasClientSecret = true
			res.clientSecretRef = &secretRef{ing.Namespace, pol.ProviderSecret, ProviderSecretClientSecret}
		}
		spec.Scopes = []string{"openid", "email", "profile"}
		if def, ok := r.file.Provider(r.file.Defaults.Provider); ok && def.GroupsClaim != "" {
			spec.GroupsClaim = def.GroupsClaim
		}
	} else {
		name := pol.Provider
		if name == "" {
			name = r.file.Defaults.Provider
		}
		p, ok := r.file.Provider(name)
		if !ok {
			if name == "" {
				return block(ReasonUnknownProvider, "no provider named and no default provider configured; set %s or the chart's defaults.provider", AnnProvider)
			}
			return block(ReasonUnknownProvider, "provider %q is not configured (known: %s)", name, strings.Join(r.providerNames(), ", "))
		}
		if !p.Allows(ing.Namespace) {
			return block(ReasonUnknownProvider, "provider %q may not be used from namespace %s", name, ing.Namespace)
		}
		prov = p
		spec.IssuerURL, spec.ClientID = p.IssuerURL, p.ClientID
		spec.Scopes, spec.GroupsClaim = p.Scopes, p.GroupsClaim
		spec.LogoutRedirect = p.LogoutRedirect
		if ref := p.ClientSecretRef; ref != nil {
			spec.HasClientSecret = true
			res.clientSecretRef = &secretRef{r.namespace, ref.Name, ref.Key}
		}
	}
	if len(pol.Scopes) > 0 {
		spec.Scopes = pol.Scopes
	}
	switch pol.SessionStore {
	case "redis":
		if prov == nil || prov.SessionStore == nil {
			return block(ReasonInvalidAnnotation, "%s: redis needs a provider with a sessionStore in the chart's values", AnnSessionStore)
		}
		fallthrough
	case "":
		if prov != nil && prov.SessionStore != nil {
			spec.RedisURL = prov.SessionStore.RedisURL
			if ref := prov.SessionStore.PasswordSecretRef; ref != nil {
				spec.HasRedisPassword = true
				res.redisRef = &secretRef{r.namespace, ref.Name, ref.Key}
			}
		}
	}

	spec.Hosts, spec.Secure = hosts(ing)
	if len(spec.Hosts) == 0 {
		return block(ReasonNoHost, "the Ingress has no host; Gatehouse builds the login callback URL from spec.rules[].host, so add one")
	}
	if !spec.Secure {
		res.Problems = append(res.Problems, problem{ReasonInsecureHost, fmt.Sprintf(
			"not every host is listed under spec.tls, so the sidecar uses http:// callbacks and cookies without Secure; add TLS for %s", strings.Join(spec.Hosts, ", "))})
	}
	if err := spec.validate(); err != nil {
		return block(ReasonInvalidAnnotation, "the sidecar would refuse this configuration: %s; nothing was changed", oneLine(err))
	}
	res.Spec = spec

	for _, sb := range serviceBackends(ing) {
		var svc corev1.Service
		err := r.reader.Get(ctx, client.ObjectKey{Namespace: ing.Namespace, Name: sb.Name}, &svc)
		if apierrors.IsNotFound(err) {
			res.Problems = append(res.Problems, problem{ReasonNumericTargetPort, fmt.Sprintf("backend Service %q not found", sb.Name)})
			continue
		}
		if err != nil {
			return res, fmt.Errorf("read service: %w", err)
		}
		name, ok := targetPortName(&svc, sb.Port)
		if !ok {
			res.Problems = append(res.Problems, problem{ReasonNumericTargetPort, fmt.Sprintf(
				"Service %q: the port the Ingress uses has a numeric targetPort, so Gatehouse cannot take it over; name the container port and set targetPort to that name (nothing was injected)", svc.Name)})
			continue
		}
		if slices.ContainsFunc(res.Backends, func(b backend) bool { return b.Service.Name == svc.Name && b.PortName == name }) {
			continue
		}
		res.Backends = append(res.Backends, backend{Service: svc.DeepCopy(), PortName: name})
	}
	return res, nil
}

func (r *resolver) providerNames() []string {
	var names []string
	for _, p := range r.file.Providers {
		names = append(names, p.Name)
	}
	return names
}

// hosts returns the Ingress's hosts, sorted, and whether every one is
// covered by spec.tls.
func hosts(ing *networkingv1.Ingress) ([]string, bool) {
	set := map[string]bool{}
	for _, rule := range ing.Spec.Rules {
		if rule.Host != "" && !strings.Contains(rule.Host, "*") {
			set[strings.ToLower(rule.Host)] = true
		}
	}
	tls := map[string]bool{}
	for _, t := range ing.Spec.TLS {
		for _, h := range t.Hosts {
			tls[strings.ToLower(h)] = true
		}
	}
	var out []string
	secure := true
	for h := range set {
		out = append(out, h)
		if !tls[h] {
			secure = false
		}
	}
	sort.Strings(out)
	return out, secure && len(out) > 0
}

// serviceBackends lists every Service backend: the default backend and
// every path of every rule.
func serviceBackends(ing *networkingv1.Ingress) []networkingv1.IngressServiceBackend {
	var out []networkingv1.IngressServiceBackend
	add := func(b *networkingv1.IngressBackend) {
		if b != nil && b.Service != nil {
			out = append(out, *b.Service)
		}
	}
	add(ing.Spec.DefaultBackend)
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		for _, p := range rule.HTTP.Paths {
			add(&p.Backend)
		}
	}
	return out
}

// targetPortName finds the Service port an Ingress backend refers to and
// returns its targetPort name; false when the target port is a number.
func targetPortName(svc *corev1.Service, want networkingv1.ServiceBackendPort) (string, bool) {
	for _, p := range svc.Spec.Ports {
		if (want.Name != "" && p.Name == want.Name) || (want.Name == "" && p.Port == want.Number) {
			if p.TargetPort.Type == intstr.String && p.TargetPort.StrVal != "" {
				return p.TargetPort.StrVal, true
			}
			return "", false
		}
	}
	return "", false
}

// oneLine joins a multi-line error for an Event message.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
