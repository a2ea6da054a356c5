package controllers

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// NamespaceNameLabel is the label the API server sets on every Namespace
// to its name.
const NamespaceNameLabel = "kubernetes.io/metadata.name"

// NoNamespace is the value the webhook's namespace-name requirement holds
// when no namespace is protected: a valid label value that no namespace
// name can be (In needs at least one value).
const NoNamespace = "gatehouse_none"

// scopeDrift is how often the webhook's scope is compared with the
// configuration without a change in the cluster: a helm upgrade or a
// GitOps sync may have put the chart's placeholder back.
const scopeDrift = time.Minute

// scopeKeeper keeps the webhook's blast radius small: the fail-closed
// webhook sees only namespaces that have an enabled Ingress or the label
// gatehouse.dev/injection=enabled. It owns one requirement of its webhook
// configuration's namespaceSelector, kubernetes.io/metadata.name In
// [...], and leaves every other requirement (the chart's exclusions) as it
// is. A Pod that starts in a newly protected namespace before the
// requirement catches up starts plain; the rollout replaces it.
type scopeKeeper struct {
	reader      client.Reader // cached: Ingresses, Namespaces
	apiReader   client.Reader // the webhook configuration, by name
	writer      client.Client
	webhookName string
	namespace   string // the controller's own
	routes      bool   // the Gateway API is installed
	resolver    *resolver
	log         logr.Logger
	// redis removes namespaces' Redis users once nothing of Gatehouse is
	// left in the namespace.
	redis *redisUsers

	mu sync.Mutex // guards others
	// others is the namespaceSelector without the owned requirement, as
	// last read; nil before the first read.
	others *metav1.LabelSelector
	// covered are the namespaces the owned requirement lists, as last
	// read or written.
	covered map[string]bool
}

// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get;patch

// Reconcile brings the namespace-name requirement up to date; the request
// is always the same one.
func (k *scopeKeeper) Reconcile(ctx context.Context, _ reconcile.Request) (ctrl.Result, error) {
	if k.webhookName == "" {
		return ctrl.Result{}, nil
	}
	var ings networkingv1.IngressList
	if err := k.reader.List(ctx, &ings, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, err
	}
	var nss corev1.NamespaceList
	if err := k.reader.List(ctx, &nss, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, err
	}
	var routeNamespaces []string
	if k.routes {
		var routes gatewayv1.HTTPRouteList
		if err := k.reader.List(ctx, &routes, client.UnsafeDisableDeepCopy); err != nil {
			return ctrl.Result{}, err
		}
		for i := range routes.Items {
			route := &routes.Items[i]
			if !enabledValue(route.Annotations) {
				continue
			}
			// Only where a ReferenceGrant lets the route in: a route
			// author must not widen the fail-closed scope to namespaces
			// that never agreed.
			for _, b := range serviceBackendRefs(route) {
				ok, err := k.resolver.referenceAllowed(ctx, route, b.ns, b.name)
				if err != nil {
					return ctrl.Result{}, err
				}
				if ok {
					routeNamespaces = append(routeNamespaces, b.ns)
				}
			}
		}
	}
	want := protectedNamespaces(ings.Items, nss.Items, routeNamespaces, k.namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var wh admissionv1.MutatingWebhookConfiguration
		if err := k.apiReader.Get(ctx, client.ObjectKey{Name: k.webhookName}, &wh); err != nil {
			return fmt.Errorf("read MutatingWebhookConfiguration %s: %w", k.webhookName, err)
		}
		orig := wh.DeepCopy()
		changed := false
		for i := range wh.Webhooks {
			if wh.Webhooks[i].Name != WebhookName {
				continue
			}
			if wh.Webhooks[i].NamespaceSelector == nil {
				wh.Webhooks[i].NamespaceSelector = &metav1.LabelSelector{}
			}
			others := setNamespaceNames(wh.Webhooks[i].NamespaceSelector, want)
			changed = changed || others.changed
			k.mu.Lock()
			k.others = others.rest
			k.mu.Unlock()
		}
		if changed {
			if err := k.writer.Patch(ctx, &wh, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
				return err
			}
		}
		covered := map[string]bool{}
		for _, ns := range want {
			covered[ns] = true
		}
		k.mu.Lock()
		k.covered = covered
		k.mu.Unlock()
		if !changed {
			return nil
		}
		ctrl.LoggerFrom(ctx).Info("Webhook scope updated", "webhook", k.webhookName, "namespaces", len(want))
		return nil
	})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("update the namespaceSelector of %s: %w", k.webhookName, err)
	}
	k.collectRedisUsers(ctx)
	return ctrl.Result{RequeueAfter: scopeDrift}, nil
}

// collectRedisUsers removes the Redis users of namespaces that hold no
// Secret of Gatehouse's any more (their last protected app is gone and
// its Secret retired). Failures are logged and retried on the next pass.
func (k *scopeKeeper) collectRedisUsers(ctx context.Context) {
	if k.redis == nil || k.resolver == nil {
		return
	}
	for i := range k.resolver.file.Providers {
		p := &k.resolver.file.Providers[i]
		if p.SessionStore == nil || !p.SessionStore.NamespaceUsers || p.SessionStore.PasswordSecretRef == nil {
			continue
		}
		var s corev1.Secret
		ref := p.SessionStore.PasswordSecretRef
		if err := k.apiReader.Get(ctx, client.ObjectKey{Namespace: k.namespace, Name: ref.Name}, &s); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Redis users not collected", "provider", p.Name)
			continue
		}
		keep := func(ns string) bool {
			var secrets corev1.SecretList
			err := k.reader.List(ctx, &secrets, client.InNamespace(ns), client.HasLabels{SecretLabelIngress}, client.Limit(1))
			return err != nil || len(secrets.Items) > 0
		}
		if err := k.redis.collect(ctx, p, s.Data[ref.Key], keep); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Redis users not collected", "provider", p.Name)
		}
	}
}

// protectedNamespaces lists, sorted, the namespaces the webhook must see:
// those with an Ingress whose gatehouse.dev/enabled is set and not false
// (an unreadable value counts as enabled, as everywhere), those of an
// enabled HTTPRoute's backends (routeNamespaces), and those labelled
// gatehouse.dev/injection=enabled; never kube-system, the controller's
// own, or one labelled gatehouse.dev/injection=disabled.
func protectedNamespaces(ings []networkingv1.Ingress, nss []corev1.Namespace, routeNamespaces []string, own string) []string {
	set := map[string]bool{}
	for i := range ings {
		if enabledValue(ings[i].Annotations) {
			set[ings[i].Namespace] = true
		}
	}
	for _, ns := range routeNamespaces {
		set[ns] = true
	}
	disabled := map[string]bool{"kube-system": true, own: true}
	for i := range nss {
		switch nss[i].Labels[NamespaceInjectionLabel] {
		case "enabled":
			set[nss[i].Name] = true
		case "disabled":
			disabled[nss[i].Name] = true
		}
	}
	var out []string
	for ns := range set {
		if !disabled[ns] {
			out = append(out, ns)
		}
	}
	slices.Sort(out)
	return out
}

// enabledValue reports whether gatehouse.dev/enabled is set and not
// false.
func enabledValue(ann map[string]string) bool {
	v, ok := ann[AnnEnabled]
	if !ok {
		return false
	}
	b, err := strconv.ParseBool(v)
	return err != nil || b
}

type selectorUpdate struct {
	changed bool
	rest    *metav1.LabelSelector
}

// setNamespaceNames makes sel's kubernetes.io/metadata.name In
// requirement list exactly names (NoNamespace when there are none),
// adding the requirement when it is missing. It returns whether sel
// changed, and sel without that requirement.
func setNamespaceNames(sel *metav1.LabelSelector, names []string) selectorUpdate {
	values := names
	if len(values) == 0 {
		values = []string{NoNamespace}
	}
	rest := sel.DeepCopy()
	rest.MatchExpressions = slices.DeleteFunc(rest.MatchExpressions, ownedRequirement)
	i := slices.IndexFunc(sel.MatchExpressions, ownedRequirement)
	if i < 0 {
		sel.MatchExpressions = append(sel.MatchExpressions, metav1.LabelSelectorRequirement{
			Key: NamespaceNameLabel, Operator: metav1.LabelSelectorOpIn, Values: values,
		})
		return selectorUpdate{changed: true, rest: rest}
	}
	if slices.Equal(sel.MatchExpressions[i].Values, values) {
		return selectorUpdate{rest: rest}
	}
	sel.MatchExpressions[i].Values = values
	return selectorUpdate{changed: true, rest: rest}
}

func ownedRequirement(r metav1.LabelSelectorRequirement) bool {
	return r.Key == NamespaceNameLabel && r.Operator == metav1.LabelSelectorOpIn
}

// excludes reports whether the webhook can never see namespace ns, so its
// Pods cannot be protected (and must not be evicted for it): kube-system,
// the controller's own namespace, the opt-out label, and whatever the rest
// of the webhook configuration's namespaceSelector leaves out (the chart's
// extra exclusions).
func (k *scopeKeeper) excludes(ctx context.Context, ns string) bool {
	if ns == "kube-system" || ns == k.namespace {
		return true
	}
	var n corev1.Namespace
	if err := k.reader.Get(ctx, client.ObjectKey{Name: ns}, &n); err != nil {
		return false
	}
	if n.Labels[NamespaceInjectionLabel] == "disabled" {
		return true
	}
	k.mu.Lock()
	others := k.others
	k.mu.Unlock()
	if others == nil {
		return false
	}
	sel, err := metav1.LabelSelectorAsSelector(others)
	if err != nil {
		return false
	}
	return !sel.Matches(labels.Set(n.Labels))
}

// covers reports whether the webhook's namespace list holds ns, as last
// read or written; always true without a webhook configuration to keep.
// A rollout waits for it: a Pod evicted before then would come back
// plain, and be evicted again.
func (k *scopeKeeper) covers(ns string) bool {
	if k.webhookName == "" {
		return true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.covered[ns]
}

// SetupWithManager registers the keeper: a change of an Ingress's
// gatehouse.dev/enabled, of a Namespace's labels, or of an HTTPRoute or
// ReferenceGrant asks for the one request.
func (k *scopeKeeper) SetupWithManager(mgr ctrl.Manager) error {
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: "webhook-scope"}}}
	})
	b := ctrl.NewControllerManagedBy(mgr).
		Named("webhook-scope").
		Watches(&networkingv1.Ingress{}, one, builder.WithPredicates(enabledChanged)).
		Watches(&corev1.Namespace{}, one, builder.WithPredicates(predicate.LabelChangedPredicate{}))
	if k.routes {
		b = b.Watches(&gatewayv1.HTTPRoute{}, one).Watches(&gatewayv1.ReferenceGrant{}, one)
	}
	return b.Complete(k)
}
