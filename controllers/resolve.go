package controllers

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
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

// problem is something wrong with a front door, reported as a Warning
// Event.
type problem struct {
	Reason  string
	Message string
}

// backend is a Service behind an enabled front door whose target port the
// sidecar takes over.
type backend struct {
	Service  *corev1.Service
	PortName string
}

// resolved is the decision for one front door on its own, before it is
// merged with the others in front of the same Services.
type resolved struct {
	Enabled bool
	// Spec is the sidecar this front door asks for; set unless Blocked.
	Spec sidecarSpec
	// Backends are its Services with a named target port, found even when
	// Blocked, so that the webhook knows which Pods a broken front door is
	// meant to protect.
	Backends []backend
	// Problems are reported; Blocked means this front door's own settings
	// cannot be used (its last good spec stays in force).
	Problems []problem
	Blocked  bool
	// Provider secrets, for the reconciler's per-Ingress Secret.
	clientSecretRef *secretRef
	redisRef        *secretRef
	// redisUser is set when the namespace gets a Redis user of its own:
	// redisRef is then the credential that makes it.
	redisUser *namespaceRedisUser
	// brokerCARef is the broker's CA, for a provider in broker mode.
	brokerCARef *secretRef
}

type secretRef struct {
	Namespace, Name, Key string
}

// resolver turns a front door into a resolved decision from cached
// Services and Namespaces and the controller's configuration. Reading
// secrets is the caller's business; resolve only records where they are.
type resolver struct {
	// routes is true when the Gateway API is installed: HTTPRoutes are
	// front doors too.
	routes    bool
	reader    client.Reader // cached reads: Services, Namespaces, LimitRanges, Gatehouse's Secrets
	apiReader client.Reader // uncached reads: provider-secret Secrets
	file      *FileConfig
	namespace string // the controller's own
	image     string
	broker    brokerSettings
}

// brokerSettings are the controller's flags for providers in broker mode.
type brokerSettings struct {
	url, tlsSecret, audience string
}

func (r *resolver) resolve(ctx context.Context, fe frontend) (resolved, error) {
	var res resolved
	if err := r.backends(ctx, fe, &res); err != nil {
		return res, err
	}
	block := func(reason, format string, args ...any) (resolved, error) {
		res.Blocked = true
		res.Problems = append(res.Problems, problem{reason, fmt.Sprintf(format, args...)})
		return res, nil
	}
	pol, err := parsePolicy(fe.Annotations)
	res.Enabled = pol.Enabled
	if _, asked := fe.Annotations[AnnEnabled]; asked && err != nil {
		// An unreadable "enabled" counts as enabled: a typo must not
		// switch protection off.
		res.Enabled = true
	}
	if err != nil {
		return block(ReasonInvalidAnnotation, "%v; the last good settings stay in force", oneLine(err))
	}
	if !pol.Enabled {
		return res, nil
	}
	if len(fe.Key) > 63 {
		// The key is a label value on the Secret; without a Secret the
		// Pods would start plain.
		return block(ReasonInvalidAnnotation, "the %s's name is longer than 63 characters, which Gatehouse cannot use as a label value; give it a shorter name", fe.Kind)
	}
	resources, err := r.sidecarResources(ctx, fe, pol)
	if err != nil {
		return block(ReasonInvalidAnnotation, "%v; the last good settings stay in force", oneLine(err))
	}
	spec := sidecarSpec{
		Ingress:    fe.Key,
		Policy:     pol,
		PathPrefix: r.file.Defaults.PathPrefix,
		Image:      r.image,
		Resources:  resources,
		MountPath:  SecretMountPath,
	}
	var prov *Provider
	if pol.ProviderSecret != "" {
		var s corev1.Secret
		err := r.apiReader.Get(ctx, client.ObjectKey{Namespace: fe.Namespace, Name: pol.ProviderSecret}, &s)
		if apierrors.IsNotFound(err) {
			return block(ReasonUnknownProvider, "%s: Secret %q not found in namespace %s", AnnProviderSecret, pol.ProviderSecret, fe.Namespace)
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
			res.clientSecretRef = &secretRef{fe.Namespace, pol.ProviderSecret, ProviderSecretClientSecret}
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
		if !p.Allows(fe.Namespace) {
			return block(ReasonUnknownProvider, "provider %q may not be used from namespace %s; the platform team adds the namespace to the provider's allowedNamespaces", name, fe.Namespace)
		}
		prov = p
		spec.IssuerURL, spec.ClientID = p.IssuerURL, p.ClientID
		spec.Scopes, spec.GroupsClaim = p.Scopes, p.GroupsClaim
		spec.LogoutRedirect = p.LogoutRedirect
		switch ref := p.ClientSecretRef; {
		case p.Brokered():
			// The client's credential (a client secret, or the private
			// key of clientKeyRef, which only the broker ever reads)
			// stays in Gatehouse's namespace; the namespace gets the
			// broker's CA instead.
			spec.Provider = p.Name
			spec.BrokerURL = strings.TrimSuffix(r.broker.url, "/") + "/v1/providers/" + url.PathEscape(p.Name)
			spec.BrokerAudience = r.broker.audience
			res.brokerCARef = &secretRef{r.namespace, r.broker.tlsSecret, "ca.crt"}
		case ref != nil:
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
			if prov.SessionStore.NamespaceUsers {
				u := newNamespaceRedisUser(prov, fe.Namespace)
				res.redisUser = &u
				spec.RedisURL, spec.RedisKeyPrefix = u.url, u.prefix
			}
		}
	}

	if len(fe.Hosts) == 0 {
		return block(ReasonNoHost, "the %s has no host; Gatehouse builds the login callback URL from its hosts, so add one", fe.Kind)
	}
	var plain []string
	for _, h := range fe.Hosts {
		spec.Origins = append(spec.Origins, h.origin())
		if h.Scheme != SchemeHTTPS {
			plain = append(plain, h.Host)
		}
	}
	if len(plain) > 0 {
		res.Problems = append(res.Problems, problem{ReasonInsecureHost, fmt.Sprintf(
			"%s served over plain http (not under spec.tls, and no %s: https), so the sidecar uses http:// callbacks and cookies without Secure; add TLS, or set %s: https when TLS ends before the Ingress", strings.Join(plain, ", "), AnnExternalScheme, AnnExternalScheme)})
	}
	if err := spec.validate(); err != nil {
		return block(ReasonInvalidAnnotation, "the sidecar would refuse this configuration: %s; the last good settings stay in force", oneLine(err))
	}
	res.Spec = spec
	return res, nil
}

// backends finds fe's Services and the named target ports the sidecar
// takes over; a missing Service or a numeric target port is a problem,
// not a refusal.
func (r *resolver) backends(ctx context.Context, fe frontend, res *resolved) error {
	for _, sb := range fe.Backends {
		var svc corev1.Service
		err := r.reader.Get(ctx, client.ObjectKey{Namespace: fe.Namespace, Name: sb.Name}, &svc)
		if apierrors.IsNotFound(err) {
			res.Problems = append(res.Problems, problem{ReasonNumericTargetPort, fmt.Sprintf("backend Service %q not found", sb.Name)})
			continue
		}
		if err != nil {
			return fmt.Errorf("read service: %w", err)
		}
		name, ok := targetPortName(&svc, sb)
		if !ok {
			res.Problems = append(res.Problems, problem{ReasonNumericTargetPort, fmt.Sprintf(
				"Service %q: the port the %s uses has a numeric targetPort, so Gatehouse cannot take it over; name the container port and set targetPort to that name (nothing was injected)", svc.Name, fe.Kind)})
			continue
		}
		if slices.ContainsFunc(res.Backends, func(b backend) bool { return b.Service.Name == svc.Name && b.PortName == name }) {
			continue
		}
		res.Backends = append(res.Backends, backend{Service: svc.DeepCopy(), PortName: name})
	}
	return nil
}

func (r *resolver) providerNames() []string {
	var names []string
	for _, p := range r.file.Providers {
		names = append(names, p.Name)
	}
	return names
}

// targetPortName finds the Service port a front door refers to and
// returns its targetPort name; false when the target port is a number.
func targetPortName(svc *corev1.Service, want serviceRef) (string, bool) {
	for _, p := range svc.Spec.Ports {
		if (want.PortName != "" && p.Name == want.PortName) || (want.PortName == "" && p.Port == want.PortNumber) {
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
