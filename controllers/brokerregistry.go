package controllers

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
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
	signer    *registrySigner
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

// Bounds of the registry, which lives in one ConfigMap (at most 1 MiB):
// one namespace with a great many hosts must not stop its updates for
// every other namespace.
const (
	maxRegistryURLs  = 500     // callback URLs of one namespace
	maxRegistryBytes = 900_000 // the whole registry's data
)

// claim is a verified registry entry of one Secret.
type claim struct {
	namespace, provider string
	urls                []string
	// created is the Secret's creationTimestamp, which the API server sets
	// (whole seconds); within one second, the controller's own record of
	// the moment (gatehouse.dev/created) breaks the tie.
	created, precise time.Time
}

// before reports whether c claimed its hosts before o.
func (c claim) before(o claim) bool {
	switch {
	case !c.created.Equal(o.created):
		return c.created.Before(o.created)
	case !c.precise.Equal(o.precise):
		return c.precise.Before(o.precise)
	default:
		return c.namespace < o.namespace
	}
}

// entries are the registry's data: namespace -> BrokerRedirects. Only
// Secrets the controller wrote count: a tenant can create a Secret with
// Gatehouse's label in its own namespace, but not its registry MAC. A host
// belongs to the namespace that claimed it first (by its Secret's
// creationTimestamp, which the API server sets); a later claim from
// another namespace is left out, so a tenant cannot add another team's
// host to its entry by naming it in an Ingress of its own.
func (k *registryKeeper) entries(ctx context.Context) (map[string]string, error) {
	log := ctrl.LoggerFrom(ctx)
	key, err := k.signer.key(ctx)
	if err != nil {
		return nil, err
	}
	var list corev1.SecretList
	if err := k.reader.List(ctx, &list, client.HasLabels{SecretLabelIngress}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list Gatehouse's secrets: %w", err)
	}
	var claims []claim
	for i := range list.Items {
		s := &list.Items[i]
		spec := lastGoodOf(s)
		if spec == nil || !spec.brokered() || spec.Provider == "" {
			continue
		}
		c := claim{namespace: s.Namespace, provider: spec.Provider, urls: spec.redirectURLs(), created: s.CreationTimestamp.Time, precise: secretCreated(s).Time}
		if s.Name != secretName(spec.Ingress) || s.Labels[SecretLabelIngress] != spec.Ingress ||
			!hmac.Equal([]byte(s.Annotations[SecretAnnRegistryMAC]), []byte(registryMAC(key, c.namespace, c.provider, c.urls))) {
			log.Info("Secret left out of the broker registry: Gatehouse did not write it", "namespace", s.Namespace, "secret", s.Name)
			continue
		}
		claims = append(claims, c)
	}
	return registryData(claims, log), nil
}

// registryData turns verified claims into the registry's data: each host
// to the namespace that claimed it first, each namespace within
// maxRegistryURLs, the whole within maxRegistryBytes.
func registryData(claims []claim, log logr.Logger) map[string]string {
	owner := map[string]claim{} // host -> the earliest claim
	for _, c := range claims {
		for _, u := range c.urls {
			host := hostOf(u)
			if o, ok := owner[host]; !ok || c.before(o) {
				owner[host] = c
			}
		}
	}
	byNS := map[string]BrokerRedirects{}
	for _, c := range claims {
		for _, u := range c.urls {
			if o := owner[hostOf(u)]; o.namespace != c.namespace {
				log.Info("Host left out of the broker registry: another namespace claimed it first", "namespace", c.namespace, "host", hostOf(u), "owner", o.namespace)
				continue
			}
			if byNS[c.namespace] == nil {
				byNS[c.namespace] = BrokerRedirects{}
			}
			byNS[c.namespace][c.provider] = append(byNS[c.namespace][c.provider], u)
		}
	}
	out := make(map[string]string, len(byNS))
	size := 0
	for ns, r := range byNS {
		n := 0
		for _, urls := range r {
			n += len(urls)
		}
		if n > maxRegistryURLs {
			log.Error(nil, "Namespace left out of the broker registry: too many callback URLs; its sign-ins through the broker are refused", "namespace", ns, "urls", n, "max", maxRegistryURLs)
			continue
		}
		out[ns] = r.String()
		size += len(ns) + len(out[ns])
	}
	for size > maxRegistryBytes {
		// Leave out the largest entries, so that the others still fit.
		largest := ""
		for ns, v := range out {
			if largest == "" || len(v) > len(out[largest]) {
				largest = ns
			}
		}
		log.Error(nil, "Namespace left out of the broker registry: the registry is full; its sign-ins through the broker are refused", "namespace", largest, "bytes", size, "max", maxRegistryBytes)
		size -= len(largest) + len(out[largest])
		delete(out, largest)
	}
	return out
}

// hostOf is the lower-cased host name of a callback URL.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Hostname())
}

// registryMAC authenticates a Secret's claim to the registry: HMAC-SHA256,
// keyed with a key only the controller reads, of the namespace, the
// provider and the callback URLs.
func registryMAC(key []byte, namespace, provider string, urls []string) string {
	sorted := slices.Clone(urls)
	slices.Sort(sorted)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(namespace + "\x00" + provider + "\x00" + strings.Join(sorted, "\x00")))
	return hex.EncodeToString(m.Sum(nil))
}

// registrySigner holds the key of registry MACs: 32 random bytes in a
// Secret of the controller's namespace, made by the first replica that
// needs it and read once.
type registrySigner struct {
	reader    client.Reader // uncached
	writer    client.Client
	namespace string
	name      string

	mu sync.Mutex // guards k
	k  []byte
}

func (r *registrySigner) key(ctx context.Context) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.k != nil {
		return r.k, nil
	}
	var s corev1.Secret
	err := r.reader.Get(ctx, client.ObjectKey{Namespace: r.namespace, Name: r.name}, &s)
	if apierrors.IsNotFound(err) {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		s = corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.namespace, Name: r.name}, Data: map[string][]byte{"key": k}}
		if err = r.writer.Create(ctx, &s); apierrors.IsAlreadyExists(err) {
			err = r.reader.Get(ctx, client.ObjectKey{Namespace: r.namespace, Name: r.name}, &s)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("broker registry key %s: %w", r.name, err)
	}
	if len(s.Data["key"]) < 32 {
		return nil, fmt.Errorf("broker registry key %s: no key of 32 bytes", r.name)
	}
	r.k = s.Data["key"]
	return r.k, nil
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
		}), builder.WithPredicates(registryInputChanged)).
		Complete(k)
}

// registryInputChanged passes the events of Gatehouse's Secrets that can
// change the registry: created, deleted, or updated in what entries reads.
// The controller patches a Secret's status annotations on every rollout
// step; those updates rebuild nothing.
var registryInputChanged = predicate.Funcs{
	CreateFunc:  func(e event.CreateEvent) bool { return e.Object.GetLabels()[SecretLabelIngress] != "" },
	DeleteFunc:  func(e event.DeleteEvent) bool { return e.Object.GetLabels()[SecretLabelIngress] != "" },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld, e.ObjectNew
		if o.GetLabels()[SecretLabelIngress] == "" && n.GetLabels()[SecretLabelIngress] == "" {
			return false
		}
		os, ook := o.(*corev1.Secret)
		ns, nok := n.(*corev1.Secret)
		return !ook || !nok ||
			o.GetLabels()[SecretLabelIngress] != n.GetLabels()[SecretLabelIngress] ||
			o.GetAnnotations()[SecretAnnRegistryMAC] != n.GetAnnotations()[SecretAnnRegistryMAC] ||
			!bytes.Equal(os.Data[SecretKeyLastGood], ns.Data[SecretKeyLastGood])
	},
}
