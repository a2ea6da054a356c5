package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Gateway API: an HTTPRoute with gatehouse.dev annotations protects the
// Pods behind its backendRefs exactly as an Ingress does. GRPCRoute and
// TLSRoute are not read.

// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes;gateways;referencegrants,verbs=get;list;watch

// routeKeyPrefix starts the key of an HTTPRoute's front door. An Ingress's
// name cannot hold the underscore, so keys never clash.
const routeKeyPrefix = "httproute_"

// routeKey is the key of route ns/name: the value of its Secrets'
// gatehouse.dev/ingress label (at most 63 characters, so long names are
// hashed; the Secret's gatehouse.dev/httproute annotation names the route).
func routeKey(ns, name string) string {
	k := routeKeyPrefix + ns + "_" + name
	if len(k) > 63 {
		sum := sha256.Sum256([]byte(ns + "/" + name))
		k = routeKeyPrefix + hex.EncodeToString(sum[:16])
	}
	return k
}

// indexRouteBackend indexes HTTPRoutes by <namespace>/<service> of each
// Service backendRef, so the front doors of a Service in any namespace
// are found without reading every route.
const indexRouteBackend = "gatehouse.dev/route-backend"

// routeBackendKeys is the indexer function for indexRouteBackend.
func routeBackendKeys(obj client.Object) []string {
	route, ok := obj.(*gatewayv1.HTTPRoute)
	if !ok {
		return nil
	}
	var out []string
	for _, ref := range serviceBackendRefs(route) {
		if k := ref.ns + "/" + ref.name; !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

type routeBackend struct {
	ns, name string
	port     int32
}

// serviceBackendRefs lists the Service backends of every rule (kind
// Service in the core group, the default), with their namespace.
func serviceBackendRefs(route *gatewayv1.HTTPRoute) []routeBackend {
	var out []routeBackend
	for _, rule := range route.Spec.Rules {
		for _, ref := range rule.BackendRefs {
			if ref.Group != nil && *ref.Group != "" {
				continue
			}
			if ref.Kind != nil && *ref.Kind != "Service" {
				continue
			}
			b := routeBackend{ns: route.Namespace, name: string(ref.Name)}
			if ref.Namespace != nil && *ref.Namespace != "" {
				b.ns = string(*ref.Namespace)
			}
			if ref.Port != nil {
				b.port = *ref.Port
			}
			if !slices.Contains(out, b) {
				out = append(out, b)
			}
		}
	}
	return out
}

// backendNamespaces lists the namespaces of route's Service backends,
// sorted.
func backendNamespaces(route *gatewayv1.HTTPRoute) []string {
	var out []string
	for _, b := range serviceBackendRefs(route) {
		if !slices.Contains(out, b.ns) {
			out = append(out, b.ns)
		}
	}
	sort.Strings(out)
	return out
}

// referenceAllowed reports whether a ReferenceGrant in namespace ns lets
// HTTPRoutes of route's namespace refer to Service svc there.
func (r *resolver) referenceAllowed(ctx context.Context, route *gatewayv1.HTTPRoute, ns, svc string) (bool, error) {
	if ns == route.Namespace {
		return true, nil
	}
	var grants gatewayv1.ReferenceGrantList
	if err := r.reader.List(ctx, &grants, client.InNamespace(ns)); err != nil {
		return false, fmt.Errorf("list reference grants: %w", err)
	}
	for _, g := range grants.Items {
		from := slices.ContainsFunc(g.Spec.From, func(f gatewayv1.ReferenceGrantFrom) bool {
			return f.Group == gatewayv1.GroupName && f.Kind == KindHTTPRoute && string(f.Namespace) == route.Namespace
		})
		to := slices.ContainsFunc(g.Spec.To, func(t gatewayv1.ReferenceGrantTo) bool {
			return t.Group == "" && t.Kind == "Service" && (t.Name == nil || string(*t.Name) == svc)
		})
		if from && to {
			return true, nil
		}
	}
	return false, nil
}

// frontendsOfRoute reads an HTTPRoute as one front door per namespace of
// its backends: hosts from spec.hostnames, else from the hostnames of the
// parent Gateways' listeners it attaches to; each host https when a
// listener that serves it terminates TLS (protocol HTTPS or TLS), or as
// gatehouse.dev/external-scheme says. Backends in another namespace that
// no ReferenceGrant allows are left out and named in refused.
func (r *resolver) frontendsOfRoute(ctx context.Context, route *gatewayv1.HTTPRoute) (fronts []frontend, refused []string, err error) {
	hosts, err := r.routeHosts(ctx, route)
	if err != nil {
		return nil, nil, err
	}
	byNS := map[string]*frontend{}
	for _, b := range serviceBackendRefs(route) {
		ok, err := r.referenceAllowed(ctx, route, b.ns, b.name)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			refused = append(refused, b.ns+"/"+b.name)
			continue
		}
		fe := byNS[b.ns]
		if fe == nil {
			fe = &frontend{
				Kind: KindHTTPRoute, Namespace: b.ns, Name: route.Name, RouteNamespace: route.Namespace,
				Key: routeKey(route.Namespace, route.Name), UID: route.UID, Created: route.CreationTimestamp,
				Annotations: route.Annotations, Hosts: hosts, Object: route,
			}
			byNS[b.ns] = fe
		}
		ref := serviceRef{Name: b.name, PortNumber: b.port}
		if !slices.Contains(fe.Backends, ref) {
			fe.Backends = append(fe.Backends, ref)
		}
	}
	for _, ns := range backendNamespaces(route) {
		if fe := byNS[ns]; fe != nil {
			fronts = append(fronts, *fe)
		}
	}
	return fronts, refused, nil
}

// listener is a parent Gateway listener a route attaches to.
type listener struct {
	hostname string // empty: any
	tls      bool
}

// routeHosts is the external hosts of route, sorted.
func (r *resolver) routeHosts(ctx context.Context, route *gatewayv1.HTTPRoute) ([]externalHost, error) {
	var listeners []listener
	for _, parent := range route.Spec.ParentRefs {
		if (parent.Group != nil && *parent.Group != gatewayv1.GroupName) || (parent.Kind != nil && *parent.Kind != "Gateway") {
			continue
		}
		ns := route.Namespace
		if parent.Namespace != nil && *parent.Namespace != "" {
			ns = string(*parent.Namespace)
		}
		var gw gatewayv1.Gateway
		if err := r.reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: string(parent.Name)}, &gw); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("read gateway: %w", err)
		}
		for _, l := range gw.Spec.Listeners {
			if parent.SectionName != nil && l.Name != *parent.SectionName {
				continue
			}
			if parent.Port != nil && l.Port != *parent.Port {
				continue
			}
			li := listener{tls: l.Protocol == gatewayv1.HTTPSProtocolType || l.Protocol == gatewayv1.TLSProtocolType}
			if l.Hostname != nil {
				li.hostname = strings.ToLower(string(*l.Hostname))
			}
			listeners = append(listeners, li)
		}
	}
	override := route.Annotations[AnnExternalScheme]
	scheme := func(host string) string {
		if override == SchemeHTTPS || override == SchemeHTTP {
			return override
		}
		for _, l := range listeners {
			if l.tls && (l.hostname == "" || l.hostname == host || tlsCovers([]string{l.hostname}, host)) {
				return SchemeHTTPS
			}
		}
		return SchemeHTTP
	}
	var names []string
	for _, h := range route.Spec.Hostnames {
		names = append(names, strings.ToLower(string(h)))
	}
	if len(names) == 0 {
		for _, l := range listeners {
			names = append(names, l.hostname)
		}
	}
	var out []externalHost
	for _, h := range names {
		if h == "" || strings.Contains(h, "*") || slices.ContainsFunc(out, func(e externalHost) bool { return e.Host == h }) {
			continue
		}
		out = append(out, externalHost{Host: h, Scheme: scheme(h)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out, nil
}

// routeFrontendsOf resolves the enabled HTTPRoutes with Service svc of
// namespace ns as a backend, as front doors of namespace ns; nothing when
// the Gateway API is not installed.
func (l *lookup) routeFrontendsOf(ctx context.Context, ns, svc string) ([]resolvedFront, error) {
	if !l.r.routes {
		return nil, nil
	}
	var list gatewayv1.HTTPRouteList
	if err := l.r.reader.List(ctx, &list, client.MatchingFields{indexRouteBackend: ns + "/" + svc}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	var out []resolvedFront
	for i := range list.Items {
		route := &list.Items[i]
		if route.Annotations[AnnEnabled] == "" {
			continue
		}
		key := routeKey(route.Namespace, route.Name)
		rf, ok := l.front[key]
		if !ok {
			fronts, _, err := l.r.frontendsOfRoute(ctx, route)
			if err != nil {
				return nil, err
			}
			i := slices.IndexFunc(fronts, func(fe frontend) bool { return fe.Namespace == ns })
			if i < 0 {
				continue // not allowed by a ReferenceGrant
			}
			res, err := l.r.resolve(ctx, fronts[i])
			if err != nil {
				return nil, err
			}
			rf = l.remember(fronts[i], res)
		}
		if rf.fe.Namespace == ns && rf.res.Enabled {
			out = append(out, rf)
		}
	}
	return out, nil
}

// providerRoutes maps a change of a provider's Secret in Gatehouse's
// namespace to the enabled HTTPRoutes that use that provider, as
// providerSecrets does for Ingresses.
func (r *RouteReconciler) providerRoutes() handler.EventHandler {
	return providerUsers(r.resolver.file, r.resolver.broker.tlsSecret, r.client, func() client.ObjectList { return &gatewayv1.HTTPRouteList{} })
}

// ReasonRefNotPermitted is the Warning for a backend in another namespace without a
// ReferenceGrant.
const ReasonRefNotPermitted = "RefNotPermitted"

// RouteReconciler does for HTTPRoutes what IngressReconciler does for
// Ingresses, with the same code: each namespace of a route's backends is
// one front door, whose Secret lives there, next to the Pods.
type RouteReconciler struct {
	*IngressReconciler
}

// Reconcile reads the route and reconciles one front door per backend
// namespace; namespaces it no longer reaches (and a deleted route's) are
// retired like a deleted Ingress.
func (r *RouteReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	key := routeKey(req.Namespace, req.Name)
	var route gatewayv1.HTTPRoute
	var fronts []frontend
	if err := r.client.Get(ctx, req.NamespacedName, &route); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
	} else {
		var refused []string
		var err error
		if fronts, refused, err = r.resolver.frontendsOfRoute(ctx, &route); err != nil {
			return ctrl.Result{}, err
		}
		if len(refused) > 0 && route.Annotations[AnnEnabled] != "" {
			r.warn(&route, ReasonRefNotPermitted, fmt.Sprintf("backend Service(s) %s are in another namespace and no ReferenceGrant there allows HTTPRoutes of namespace %s to use them, so they get no sidecar", strings.Join(refused, ", "), route.Namespace))
		}
	}
	result := ctrl.Result{}
	merge := func(res ctrl.Result) {
		if res.RequeueAfter > 0 && (result.RequeueAfter == 0 || res.RequeueAfter < result.RequeueAfter) {
			result.RequeueAfter = res.RequeueAfter
		}
	}
	for _, fe := range fronts {
		res, err := r.reconcileFrontend(ctx, fe)
		if err != nil {
			return ctrl.Result{}, err
		}
		merge(res)
	}
	// Namespaces that hold this route's Secret but are no longer reached.
	var secrets corev1.SecretList
	if err := r.client.List(ctx, &secrets, client.MatchingLabels{SecretLabelIngress: key}); err != nil {
		return ctrl.Result{}, err
	}
	for _, s := range secrets.Items {
		if slices.ContainsFunc(fronts, func(fe frontend) bool { return fe.Namespace == s.Namespace }) {
			continue
		}
		res, err := r.retire(ctx, s.Namespace, key, nil)
		if err != nil {
			return ctrl.Result{}, err
		}
		merge(res)
	}
	return result, nil
}

// SetupWithManager registers the route reconciler: HTTPRoutes with a
// gatehouse.dev/ annotation (the others cost their watch only), their
// Secrets (by annotation), the provider Secrets in Gatehouse's namespace,
// the Services and Pods behind them, Gateways (hosts and TLS) and
// ReferenceGrants.
func (r *RouteReconciler) SetupWithManager(mgr ctrl.Manager) error {
	c := mgr.GetClient()
	request := func(ns, name string) reconcile.Request {
		return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}
	}
	// enabled asks for every enabled route that opts select.
	enabled := func(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
		var list gatewayv1.HTTPRouteList
		if err := c.List(ctx, &list, opts...); err != nil {
			return nil
		}
		var reqs []reconcile.Request
		for _, route := range list.Items {
			if route.Annotations[AnnEnabled] != "" {
				reqs = append(reqs, request(route.Namespace, route.Name))
			}
		}
		return reqs
	}
	byService := func(ctx context.Context, ns, svc string) []reconcile.Request {
		return enabled(ctx, client.MatchingFields{indexRouteBackend: ns + "/" + svc})
	}
	allEnabled := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		return enabled(ctx)
	})
	services := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		return byService(ctx, obj.GetNamespace(), obj.GetName())
	})
	secrets := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, obj client.Object) []reconcile.Request {
		if ns, name, ok := strings.Cut(obj.GetAnnotations()[SecretAnnHTTPRoute], "/"); ok {
			return []reconcile.Request{request(ns, name)}
		}
		return nil
	})
	pods := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		var reqs []reconcile.Request
		for _, svc := range servicesSelecting(ctx, c, obj) {
			reqs = append(reqs, byService(ctx, obj.GetNamespace(), svc)...)
		}
		return reqs
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("httproute").
		For(&gatewayv1.HTTPRoute{}, builder.WithPredicates(gatehouseAnnotated, predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Watches(&corev1.Secret{}, secrets).
		Watches(&corev1.Secret{}, r.providerRoutes(), builder.WithPredicates(inNamespace(r.resolver.namespace))).
		Watches(&corev1.Service{}, services).
		Watches(&corev1.Pod{}, pods).
		Watches(&gatewayv1.Gateway{}, allEnabled, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&gatewayv1.ReferenceGrant{}, allEnabled, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Complete(r)
}
