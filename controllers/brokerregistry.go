package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// BrokerRedirects is one namespace's entry in the broker registry, the
// ConfigMap in Gatehouse's namespace that the controller keeps and
// gatehouse broker reads: for each provider in broker mode, the callback
// URLs the controller rendered for the namespace's front doors. The broker
// exchanges a code for a namespace only with a redirect_uri on one of
// their hosts, so a tenant cannot redeem codes issued for a host that
// belongs to another namespace (the IdP itself checks the exact URI). The
// ConfigMap's keys are namespace names, each value the JSON of a
// BrokerRedirects.
type BrokerRedirects map[string][]string

// DefaultBrokerRegistry is the registry ConfigMap's name when none is
// given.
const DefaultBrokerRegistry = "gatehouse-broker-registry"

// DefaultBrokerAudience is the audience of the projected ServiceAccount
// tokens with which sidecars authenticate to the broker.
const DefaultBrokerAudience = "gatehouse-broker"

// ParseBrokerRedirects reads one namespace's registry entry.
func ParseBrokerRedirects(s string) (BrokerRedirects, error) {
	var r BrokerRedirects
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		return nil, fmt.Errorf("broker registry entry: %w", err)
	}
	return r, nil
}

// Allows reports whether redirectURI is an http or https URL on a host
// registered for provider (host names compare case-insensitively, as DNS
// does). The host, not the whole URL, is what a namespace owns: a port
// (a sidecar reached on another port, as in local development) or the
// scheme changes nothing about whose app receives the code. A URL with
// user information, a fragment or no host is never allowed (RFC 6749
// 3.1.2).
func (r BrokerRedirects) Allows(provider, redirectURI string) bool {
	u, err := url.Parse(redirectURI)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.User != nil || u.Fragment != "" || u.Hostname() == "" {
		return false
	}
	for _, registered := range r[provider] {
		if ru, err := url.Parse(registered); err == nil && ru.Hostname() != "" && strings.EqualFold(ru.Hostname(), u.Hostname()) {
			return true
		}
	}
	return false
}

// String renders the entry as the ConfigMap holds it, with sorted lists so
// that an unchanged registry is never rewritten.
func (r BrokerRedirects) String() string {
	out := make(BrokerRedirects, len(r))
	for p, urls := range r {
		urls = slices.Clone(urls)
		slices.Sort(urls)
		out[p] = slices.Compact(urls)
	}
	b, _ := json.Marshal(out)
	return string(b)
}

// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;create;update

// registryKeeper keeps the broker registry: for every namespace, the
// callback URLs of the last good specs in Gatehouse's Secrets there whose
// provider is in broker mode. A Secret is in it from when its front door is
// first protected until the controller deletes it, so a login that began
// before an edit still completes.
type registryKeeper struct {
	reader    client.Reader // cache: Gatehouse's Secrets
	apiReader client.Reader // the ConfigMap, which is not cached
	writer    client.Client
	namespace string
	name      string
}

// Reconcile rewrites the whole registry from the cached Secrets: one
// request stands for every change, so a burst of changes is one write.
func (k *registryKeeper) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	want, err := k.entries(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	var cm corev1.ConfigMap
	err = k.apiReader.Get(ctx, client.ObjectKey{Namespace: k.namespace, Name: k.name}, &cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: k.namespace, Name: k.name}, Data: want}
		if err := k.writer.Create(ctx, &cm); err != nil {
			return ctrl.Result{}, fmt.Errorf("create broker registry: %w", err)
		}
	case err != nil:
		return ctrl.Result{}, fmt.Errorf("read broker registry: %w", err)
	case !maps.Equal(cm.Data, want):
		cm.Data = want
		if err := k.writer.Update(ctx, &cm); err != nil {
			return ctrl.Result{}, fmt.Errorf("update broker registry: %w", err)
		}
	default:
		return ctrl.Result{}, nil
	}
	ctrl.LoggerFrom(ctx).Info("Broker registry updated", "configMap", k.name, "namespaces", len(want))
	return ctrl.Result{}, nil
}

// entries are the registry's data: namespace -> BrokerRedirects.
func (k *registryKeeper) entries(ctx context.Context) (map[string]string, error) {
	var list corev1.SecretList
	if err := k.reader.List(ctx, &list, client.HasLabels{SecretLabelIngress}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list Gatehouse's secrets: %w", err)
	}
	byNS := map[string]BrokerRedirects{}
	for i := range list.Items {
		spec := lastGoodOf(&list.Items[i])
		if spec == nil || !spec.brokered() || spec.Provider == "" {
			continue
		}
		ns := list.Items[i].Namespace
		if byNS[ns] == nil {
			byNS[ns] = BrokerRedirects{}
		}
		byNS[ns][spec.Provider] = append(byNS[ns][spec.Provider], spec.redirectURLs()...)
	}
	out := make(map[string]string, len(byNS))
	for ns, r := range byNS {
		out[ns] = r.String()
	}
	return out, nil
}

// registryRequest is the one request that stands for the whole registry.
var registryRequest = reconcile.Request{NamespacedName: types.NamespacedName{Name: "broker-registry"}}

// SetupWithManager registers the keeper for changes of Gatehouse's
// Secrets; it also runs once at start.
func (k *registryKeeper) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("broker-registry").
		WatchesRawSource(source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
			q.Add(registryRequest)
			return nil
		})).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
			return []reconcile.Request{registryRequest}
		}), builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetLabels()[SecretLabelIngress] != ""
		}))).
		Complete(k)
}
