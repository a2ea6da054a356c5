package controllers

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// frontend is one front door of an app, read from an Ingress: what the
// resolving, merging, Secret, Event and status code works on, so that it
// never looks at the Ingress's own shape.
type frontend struct {
	Kind string // KindIngress or KindHTTPRoute
	// Namespace is where the app's Services, Pods and the Secret are: the
	// Ingress's own, or one namespace of an HTTPRoute's backends.
	Namespace string
	Name      string
	// RouteNamespace is an HTTPRoute's own namespace.
	RouteNamespace string
	// Key names the front door among the Secrets and Pods of Namespace:
	// the value of the Secret's gatehouse.dev/ingress label and of the
	// Pods' gatehouse.dev/ingress annotation. An Ingress's name; for an
	// HTTPRoute, routeKey.
	Key     string
	UID     types.UID
	Created metav1.Time
	// Annotations are the object's own; only gatehouse.dev/ keys matter.
	Annotations map[string]string
	// Hosts are the external hostnames, lower-cased and sorted, each with
	// the scheme browsers use for it.
	Hosts []externalHost
	// Backends are the Services traffic goes to, with the port asked for.
	Backends []serviceRef
	// Object is the Ingress itself, for Events.
	Object client.Object
}

// externalHost is a hostname and the scheme browsers reach it with.
type externalHost struct {
	Host   string
	Scheme string // "https" or "http"
}

// origin renders h as scheme://host.
func (h externalHost) origin() string { return h.Scheme + "://" + h.Host }

// serviceRef is a backend Service and the port the front door uses: by
// name, or by number when Name is empty.
type serviceRef struct {
	Name       string
	PortName   string
	PortNumber int32
}

// Kinds of front door.
const (
	KindIngress   = "Ingress"
	KindHTTPRoute = "HTTPRoute"
)

// Values of gatehouse.dev/external-scheme.
const (
	SchemeHTTPS = "https"
	SchemeHTTP  = "http"
)

// frontendFromIngress reads an Ingress: hosts from spec.rules (wildcard
// rules are skipped: a callback URL needs one host), each https when
// spec.tls covers it (a TLS host "*.example.com" covers exactly one more
// label) or when gatehouse.dev/external-scheme says so; backends from the
// default backend and every path.
func frontendFromIngress(ing *networkingv1.Ingress) frontend {
	fe := frontend{
		Kind: KindIngress, Namespace: ing.Namespace, Name: ing.Name, Key: ing.Name, UID: ing.UID,
		Created: ing.CreationTimestamp, Annotations: ing.Annotations, Object: ing,
	}
	var tls []string
	for _, t := range ing.Spec.TLS {
		for _, h := range t.Hosts {
			tls = append(tls, strings.ToLower(h))
		}
	}
	override := ing.Annotations[AnnExternalScheme]
	seen := map[string]bool{}
	for _, rule := range ing.Spec.Rules {
		h := strings.ToLower(rule.Host)
		if h == "" || strings.Contains(h, "*") || seen[h] {
			continue
		}
		seen[h] = true
		scheme := SchemeHTTP
		if tlsCovers(tls, h) {
			scheme = SchemeHTTPS
		}
		if override == SchemeHTTPS || override == SchemeHTTP {
			scheme = override
		}
		fe.Hosts = append(fe.Hosts, externalHost{Host: h, Scheme: scheme})
	}
	sort.Slice(fe.Hosts, func(i, j int) bool { return fe.Hosts[i].Host < fe.Hosts[j].Host })
	for _, b := range serviceBackends(ing) {
		ref := serviceRef{Name: b.Name, PortName: b.Port.Name, PortNumber: b.Port.Number}
		if !slices.Contains(fe.Backends, ref) {
			fe.Backends = append(fe.Backends, ref)
		}
	}
	return fe
}

// tlsCovers reports whether a TLS host list covers host: exactly, or by a
// wildcard that stands for one DNS label ("*.example.com" covers
// "a.example.com", not "example.com" or "a.b.example.com").
func tlsCovers(tls []string, host string) bool {
	for _, t := range tls {
		if t == host {
			return true
		}
		if rest, ok := strings.CutPrefix(t, "*."); ok {
			label, parent, found := strings.Cut(host, ".")
			if found && label != "" && parent == rest {
				return true
			}
		}
	}
	return false
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

// key names the front door in messages: "Ingress shop".
func (fe frontend) key() string {
	if fe.Kind == KindHTTPRoute && fe.RouteNamespace != fe.Namespace {
		return fmt.Sprintf("%s %s/%s", fe.Kind, fe.RouteNamespace, fe.Name)
	}
	return fmt.Sprintf("%s %s", fe.Kind, fe.Name)
}

// metricName is the front door's "ingress" label on per-front-door
// metrics: its key (an Ingress's name; httproute_<namespace>_<name> for a
// route).
func (fe frontend) metricName() string { return metricName(fe.Key) }

func metricName(key string) string { return key }
