package controllers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// rolloutWait is how often a rollout in progress is looked at again.
const rolloutWait = 5 * time.Second

// IngressReconciler keeps, for each annotated Ingress, the per-Ingress
// Secret the sidecar mounts, and replaces Pods whose sidecar is missing,
// stale or no longer wanted. It reports user mistakes as Warning Events on
// the Ingress and then changes nothing.
type IngressReconciler struct {
	client    client.Client
	apiReader client.Reader
	resolver  *resolver
	recorder  events.EventRecorder
	metrics   *metrics
	// webhookName is the MutatingWebhookConfiguration whose
	// namespaceSelector decides which namespaces the webhook sees.
	webhookName string

	mu        sync.Mutex // guards evictions
	evictions map[types.NamespacedName]time.Time
}

// replacementWait bounds how long a rollout waits for an evicted Pod's
// replacement to appear (a bare Pod has none).
const replacementWait = 2 * time.Minute

// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingresses,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get
// +kubebuilder:rbac:groups="",resources=pods/eviction,verbs=create
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// Leader election (client-go's Lease lock) only gets, creates and updates its
// Lease.
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;create;update

// Reconcile is level-based: it reads the Ingress and what is behind it,
// computes the desired state and applies it.
func (r *IngressReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	var ing networkingv1.Ingress
	if err := r.client.Get(ctx, req.NamespacedName, &ing); err != nil {
		if apierrors.IsNotFound(err) {
			// The Secret goes with its owner reference; Pods keep their
			// sidecar until they are replaced.
			r.metrics.unprotected.DeleteLabelValues(req.Namespace, req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	res, err := r.resolver.resolve(ctx, &ing)
	if err != nil {
		return ctrl.Result{}, err
	}
	for _, p := range res.Problems {
		r.recorder.Eventf(&ing, nil, corev1.EventTypeWarning, p.Reason, "Reconcile", "%s", p.Message)
	}
	if res.Blocked {
		// A mistake changes nothing: no Secret is made, none is removed, no
		// Pod is touched (the webhook refuses new Pods of a protected app
		// rather than start them unprotected).
		log.Info("Ingress annotations refused; nothing changed", "reasons", len(res.Problems))
		return ctrl.Result{}, nil
	}
	if !res.Enabled {
		return r.disable(ctx, &ing)
	}
	if excluded, err := r.excludedNamespace(ctx, ing.Namespace); err != nil {
		return ctrl.Result{}, err
	} else if excluded {
		r.recorder.Eventf(&ing, nil, corev1.EventTypeWarning, ReasonUnprotectedPods, "Reconcile",
			"namespace %s is outside the webhook's scope (kube-system, Gatehouse's own, gatehouse.dev/injection=disabled, or not matched by the namespaceSelector of MutatingWebhookConfiguration %s), so its Pods cannot get the sidecar", ing.Namespace, r.webhookName)
		return ctrl.Result{}, nil
	}
	if others, err := r.conflicts(ctx, &ing, res); err != nil {
		return ctrl.Result{}, err
	} else if len(others) > 0 {
		r.recorder.Eventf(&ing, nil, corev1.EventTypeWarning, ReasonConflict, "Reconcile",
			"Ingress(es) %s enable Gatehouse with other settings in front of the same Service; Pods behind it get no sidecar until the settings agree", strings.Join(others, ", "))
		return ctrl.Result{}, nil
	}
	created, err := r.ensureSecret(ctx, &ing, res)
	if err != nil {
		r.recorder.Eventf(&ing, nil, corev1.EventTypeWarning, ReasonSecretError, "Reconcile", "cannot prepare the sidecar's Secret: %v", err)
		return ctrl.Result{}, err
	}
	if created {
		r.recorder.Eventf(&ing, nil, corev1.EventTypeNormal, ReasonProtected, "Reconcile",
			"Gatehouse protects this Ingress: new Pods of %d Service(s) get the sidecar", len(res.Backends))
		log.Info("Ingress protected", "services", len(res.Backends))
	}
	result, err := r.rollout(ctx, &ing, res)
	if err == nil && result.RequeueAfter == 0 {
		// Provider Secrets are not watched: look again now and then so a
		// rotated client secret reaches the sidecars.
		result.RequeueAfter = providerResync
	}
	return result, err
}

// providerResync is how often a protected Ingress is reconciled without a
// change, to copy rotated provider secrets.
const providerResync = 5 * time.Minute

// conflicts names the other enabled Ingresses of the namespace that share a
// backend Service with ing but ask for a different sidecar.
func (r *IngressReconciler) conflicts(ctx context.Context, ing *networkingv1.Ingress, res resolved) ([]string, error) {
	var out []string
	checked := map[string]bool{ing.Name: true}
	for _, a := range res.Backends {
		var list networkingv1.IngressList
		if err := r.client.List(ctx, &list, client.InNamespace(ing.Namespace),
			client.MatchingFields{indexBackendService: a.Service.Name}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		for i := range list.Items {
			other := &list.Items[i]
			if checked[other.Name] || other.Annotations[AnnEnabled] == "" {
				continue
			}
			checked[other.Name] = true
			ores, err := r.resolver.resolve(ctx, other)
			if err != nil {
				return nil, err
			}
			if !ores.Enabled || ores.Blocked {
				continue
			}
			for _, b := range ores.Backends {
				if b.Service.Name == a.Service.Name && (a.PortName != b.PortName || !samePolicy(res.Spec, ores.Spec)) {
					out = append(out, other.Name)
					break
				}
			}
		}
	}
	return out, nil
}

// ensureSecret applies the per-Ingress Secret: the cookie secret
// (generated once and kept), the client secret and Redis password copied
// from the provider, and the live policy file. It reports whether the
// Secret was new.
func (r *IngressReconciler) ensureSecret(ctx context.Context, ing *networkingv1.Ingress, res resolved) (bool, error) {
	name := secretName(ing.Name)
	var existing corev1.Secret
	// Read from the API server, not the cache: the cache holds only
	// Gatehouse's labelled Secrets, and a user's Secret of the same name
	// must be seen (and left alone).
	err := r.apiReader.Get(ctx, client.ObjectKey{Namespace: ing.Namespace, Name: name}, &existing)
	created := apierrors.IsNotFound(err)
	if err != nil && !created {
		return false, err
	}
	if !created && !ownedBy(&existing, ing) {
		return false, fmt.Errorf("a Secret named %s exists and is not Gatehouse's; delete or rename it", name)
	}
	data := map[string][]byte{SecretKeyPolicy: policyFile(res.Spec.Policy)}
	current := existing.Data[SecretKeyCookie]
	_, rotate := existing.Annotations[SecretAnnRotate]
	switch {
	case len(current) < 32:
		data[SecretKeyCookie] = newCookieSecret()
	case rotate:
		// New secret first, the previous one second: sessions under it keep
		// working and are re-issued under the new one.
		previous, _, _ := strings.Cut(string(current), "\n")
		data[SecretKeyCookie] = append(append(newCookieSecret(), '\n'), previous...)
	default:
		data[SecretKeyCookie] = current
	}
	for key, ref := range map[string]*secretRef{SecretKeyClientSecret: res.clientSecretRef, SecretKeyRedisPassword: res.redisRef} {
		if ref == nil {
			continue
		}
		v, err := r.readSecretKey(ctx, *ref)
		if err != nil {
			return false, err
		}
		data[key] = v
	}
	ac := corev1ac.Secret(name, ing.Namespace).
		WithLabels(map[string]string{SecretLabelIngress: ing.Name}).
		WithOwnerReferences(metav1ac.OwnerReference().
			WithAPIVersion("networking.k8s.io/v1").WithKind("Ingress").
			WithName(ing.Name).WithUID(ing.UID).WithController(true)).
		WithType(corev1.SecretTypeOpaque).
		WithData(data)
	if err := r.client.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return false, fmt.Errorf("apply secret %s: %w", name, err)
	}
	if rotate {
		patched := existing.DeepCopy()
		delete(patched.Annotations, SecretAnnRotate)
		if err := r.client.Patch(ctx, patched, client.MergeFrom(&existing)); err != nil {
			return false, fmt.Errorf("clear %s on %s: %w", SecretAnnRotate, name, err)
		}
		r.recorder.Eventf(ing, nil, corev1.EventTypeNormal, ReasonProtected, "RotateCookieSecret",
			"new cookie secret in Secret %s; the previous one stays accepted", name)
	}
	return created, nil
}

func (r *IngressReconciler) readSecretKey(ctx context.Context, ref secretRef) ([]byte, error) {
	var s corev1.Secret
	if err := r.apiReader.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, &s); err != nil {
		return nil, fmt.Errorf("read Secret %s/%s: %w", ref.Namespace, ref.Name, err)
	}
	v, ok := s.Data[ref.Key]
	if !ok || len(v) == 0 {
		return nil, fmt.Errorf("secret %s/%s has no key %q", ref.Namespace, ref.Name, ref.Key)
	}
	return v, nil
}

func ownedBy(obj metav1.Object, ing *networkingv1.Ingress) bool {
	return slices.ContainsFunc(obj.GetOwnerReferences(), func(o metav1.OwnerReference) bool { return o.UID == ing.UID })
}

// newCookieSecret makes 32 random bytes, base64-encoded (44 bytes of key
// material on one line).
func newCookieSecret() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return []byte(base64.StdEncoding.EncodeToString(b))
}

// excludedNamespace reports whether the webhook never sees ns, so Pods
// there cannot be protected (and must not be evicted for it): kube-system,
// the controller's own namespace, the opt-out label, and whatever else the
// webhook configuration's namespaceSelector leaves out (the chart's extra
// exclusions). The configuration is read on every call, as the API server
// would apply it; when it cannot be read, the built-in rules decide.
func (r *IngressReconciler) excludedNamespace(ctx context.Context, ns string) (bool, error) {
	if ns == "kube-system" || ns == r.resolver.namespace {
		return true, nil
	}
	var n corev1.Namespace
	if err := r.apiReader.Get(ctx, client.ObjectKey{Name: ns}, &n); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	if n.Labels[NamespaceInjectionLabel] == "disabled" {
		return true, nil
	}
	if r.webhookName == "" {
		return false, nil
	}
	var wh admissionv1.MutatingWebhookConfiguration
	if err := r.apiReader.Get(ctx, client.ObjectKey{Name: r.webhookName}, &wh); err != nil {
		ctrl.LoggerFrom(ctx).V(1).Info("Webhook configuration unreadable; its namespaceSelector is not applied", "webhook", r.webhookName, "error", err.Error())
		return false, nil
	}
	for _, w := range wh.Webhooks {
		if w.Name != WebhookName || w.NamespaceSelector == nil {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(w.NamespaceSelector)
		if err != nil {
			return false, fmt.Errorf("namespaceSelector of %s: %w", r.webhookName, err)
		}
		// The API server labels every namespace with its name.
		nsLabels := labels.Set{corev1.LabelMetadataName: n.Name}
		maps.Copy(nsLabels, n.Labels)
		return !sel.Matches(nsLabels), nil
	}
	return false, nil
}

// disable handles an Ingress without gatehouse.dev/enabled: "true": its
// Secret goes, and Pods that still carry its sidecar are replaced.
func (r *IngressReconciler) disable(ctx context.Context, ing *networkingv1.Ingress) (ctrl.Result, error) {
	r.metrics.unprotected.DeleteLabelValues(ing.Namespace, ing.Name)
	var s corev1.Secret
	err := r.client.Get(ctx, client.ObjectKey{Namespace: ing.Namespace, Name: secretName(ing.Name)}, &s)
	if err == nil && ownedBy(&s, ing) {
		if err := r.client.Delete(ctx, &s); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
	}
	var pods corev1.PodList
	if err := r.client.List(ctx, &pods, client.InNamespace(ing.Namespace)); err != nil {
		return ctrl.Result{}, err
	}
	var stale []corev1.Pod
	for _, p := range pods.Items {
		if p.Annotations[PodAnnIngress] == ing.Name && p.DeletionTimestamp == nil {
			stale = append(stale, p)
		}
	}
	if len(stale) == 0 || ing.Annotations[AnnRollout] == RolloutManual {
		return ctrl.Result{}, nil
	}
	// The set to keep Ready: every Pod behind a Service that selects a
	// stale one (their replacements included).
	var svcs corev1.ServiceList
	if err := r.client.List(ctx, &svcs, client.InNamespace(ing.Namespace)); err != nil {
		return ctrl.Result{}, err
	}
	var set []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for i := range svcs.Items {
			svc := &svcs.Items[i]
			if selects(svc, labels.Set(p.Labels)) && slices.ContainsFunc(stale, func(s corev1.Pod) bool { return selects(svc, labels.Set(s.Labels)) }) {
				set = append(set, p)
				break
			}
		}
	}
	return r.replaceOne(ctx, ing, set, stale)
}

// rollout finds the Pods behind the Ingress that lack the current sidecar,
// reports them, and unless gatehouse.dev/rollout is manual replaces one at
// a time through the Eviction API (which honours PodDisruptionBudgets),
// waiting for every Pod of the set to be Ready before the next.
func (r *IngressReconciler) rollout(ctx context.Context, ing *networkingv1.Ingress, res resolved) (ctrl.Result, error) {
	var pods corev1.PodList
	if err := r.client.List(ctx, &pods, client.InNamespace(ing.Namespace)); err != nil {
		return ctrl.Result{}, err
	}
	want := res.Spec.hash()
	var set, outdated []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		podLabels := labels.Set(p.Labels)
		behind := false
		for _, b := range res.Backends {
			if selects(b.Service, podLabels) && (hasPortName(&p, b.PortName) || p.Annotations[PodAnnIngress] == ing.Name) {
				behind = true
				break
			}
		}
		if !behind {
			continue
		}
		set = append(set, p)
		if p.Annotations[PodAnnConfigHash] != want {
			outdated = append(outdated, p)
		}
	}
	r.metrics.unprotected.WithLabelValues(ing.Namespace, ing.Name).Set(float64(len(outdated)))
	if len(outdated) == 0 {
		return ctrl.Result{}, nil
	}
	if ing.Annotations[AnnRollout] == RolloutManual {
		r.recorder.Eventf(ing, nil, corev1.EventTypeWarning, ReasonUnprotectedPods, "Rollout",
			"%d Pod(s) run without the current sidecar and gatehouse.dev/rollout is manual: restart them (kubectl rollout restart)", len(outdated))
		return ctrl.Result{}, nil
	}
	return r.replaceOne(ctx, ing, set, outdated)
}

// replaceOne evicts the first outdated Pod once the previous eviction's
// replacement exists and every Pod of set is Ready.
func (r *IngressReconciler) replaceOne(ctx context.Context, ing *networkingv1.Ingress, set, outdated []corev1.Pod) (ctrl.Result, error) {
	key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
	r.mu.Lock()
	last, evicted := r.evictions[key]
	r.mu.Unlock()
	if evicted && time.Since(last) < replacementWait && !slices.ContainsFunc(set, func(p corev1.Pod) bool {
		return p.CreationTimestamp.After(last.Add(-time.Second))
	}) {
		return ctrl.Result{RequeueAfter: rolloutWait}, nil // the replacement is not there yet
	}
	for _, p := range set {
		if !podReady(&p) {
			return ctrl.Result{RequeueAfter: rolloutWait}, nil // wait for the replacement
		}
	}
	victim := outdated[0]
	ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: victim.Name, Namespace: victim.Namespace}}
	err := r.client.SubResource("eviction").Create(ctx, &victim, ev)
	switch {
	case apierrors.IsTooManyRequests(err):
		// A PodDisruptionBudget says not now.
		return ctrl.Result{RequeueAfter: rolloutWait}, nil
	case apierrors.IsNotFound(err):
		return ctrl.Result{RequeueAfter: time.Second}, nil
	case err != nil:
		return ctrl.Result{}, fmt.Errorf("evict pod %s: %w", victim.Name, err)
	}
	r.mu.Lock()
	if r.evictions == nil {
		r.evictions = map[types.NamespacedName]time.Time{}
	}
	r.evictions[key] = time.Now()
	r.mu.Unlock()
	r.metrics.replaced.Inc()
	r.recorder.Eventf(ing, nil, corev1.EventTypeNormal, ReasonPodReplaced, "Rollout", "evicted Pod %s so that its replacement runs the current sidecar (%d left)", victim.Name, len(outdated)-1)
	ctrl.LoggerFrom(ctx).Info("Pod evicted for rollout", "pod", victim.Name, "left", len(outdated)-1)
	return ctrl.Result{RequeueAfter: rolloutWait}, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// SetupWithManager registers the reconciler: Ingresses, the Secrets they
// own, and the Services and Pods of their namespace (which change what is
// behind an Ingress).
func (r *IngressReconciler) SetupWithManager(mgr ctrl.Manager) error {
	c := mgr.GetClient()
	request := func(ns, name string) reconcile.Request {
		return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}
	}
	// A Service changes what is behind the Ingresses that name it.
	byService := func(ctx context.Context, ns, svc string) []reconcile.Request {
		var list networkingv1.IngressList
		if err := c.List(ctx, &list, client.InNamespace(ns), client.MatchingFields{indexBackendService: svc}); err != nil {
			return nil
		}
		var reqs []reconcile.Request
		for _, ing := range list.Items {
			if ing.Annotations[AnnEnabled] != "" {
				reqs = append(reqs, request(ns, ing.Name))
			}
		}
		return reqs
	}
	services := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		return byService(ctx, obj.GetNamespace(), obj.GetName())
	})
	// A Pod matters to the Ingress whose sidecar it carries and to those in
	// front of the Services that select it.
	pods := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		var reqs []reconcile.Request
		if name := obj.GetAnnotations()[PodAnnIngress]; name != "" {
			reqs = append(reqs, request(obj.GetNamespace(), name))
		}
		podLabels := labels.Set(obj.GetLabels())
		seen := map[string]bool{}
		for k, v := range obj.GetLabels() {
			var svcs corev1.ServiceList
			if err := c.List(ctx, &svcs, client.InNamespace(obj.GetNamespace()), client.MatchingFields{indexServiceSelector: k + "=" + v}); err != nil {
				return reqs
			}
			for i := range svcs.Items {
				if seen[svcs.Items[i].Name] || !selects(&svcs.Items[i], podLabels) {
					continue
				}
				seen[svcs.Items[i].Name] = true
				reqs = append(reqs, byService(ctx, obj.GetNamespace(), svcs.Items[i].Name)...)
			}
		}
		return reqs
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("ingress").
		For(&networkingv1.Ingress{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&corev1.Secret{}).
		Watches(&corev1.Service{}, services).
		Watches(&corev1.Pod{}, pods).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}
