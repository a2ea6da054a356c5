package controllers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

const (
	// rolloutWait is how often a rollout in progress is looked at again.
	rolloutWait = 5 * time.Second
	// replacementWait is how long a rollout waits for an evicted Pod's
	// replacement before it reports the rollout blocked.
	replacementWait = 2 * time.Minute
	// problemRepeat is how often a lasting problem's Warning Event is
	// emitted again: Events expire after an hour.
	problemRepeat = 30 * time.Minute
	// providerResync is how often a protected front door with a
	// gatehouse.dev/provider-secret is reconciled without a change, to copy
	// a rotated client secret: Secrets in app namespaces are not watched
	// (the cache holds only Gatehouse's own). Provider Secrets in
	// Gatehouse's namespace are watched, for Ingresses and HTTPRoutes.
	providerResync = 5 * time.Minute
	// forgottenSize is when a rollout stops waiting for an evicted Pod's
	// replacement and takes the workload as scaled down.
	forgottenSize = 20 * time.Minute
	// Backoff of a rollout that a PodDisruptionBudget refuses.
	minBlockedBackoff = 5 * time.Second
	maxBlockedBackoff = 5 * time.Minute
)

// IngressReconciler keeps, for each annotated Ingress, the per-Ingress
// Secret the sidecar mounts (with the last good spec), and replaces Pods
// whose sidecar is missing, enforces something else, or is no longer
// wanted. It reports user mistakes as Warning Events on the Ingress and
// then changes nothing; the last good spec stays in force.
type IngressReconciler struct {
	client    client.Client
	apiReader client.Reader
	resolver  *resolver
	recorder  events.EventRecorder
	metrics   *metrics
	scope     *scopeKeeper
	redis     *redisUsers
	// registry signs the callback URLs of brokered front doors for the
	// broker registry; nil without a broker.
	registry *registrySigner
	// secretRetention is how long a Secret nobody needs any more is kept
	// for an Ingress of the same name to adopt.
	secretRetention time.Duration
	now             func() time.Time

	mu       sync.Mutex // guards rollouts
	rollouts map[string]*rolloutState
}

// rolloutState is the rollout of one controller's Pods: one eviction at a
// time.
type rolloutState struct {
	mu           sync.Mutex // held while the set is looked at and evicted from
	lastEviction time.Time
	// size is how many Pods the controller had at the last eviction.
	size         int
	backoff      time.Duration
	blockedUntil time.Time
}

// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingresses,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=limitranges,verbs=get;list;watch
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
	var ing networkingv1.Ingress
	if err := r.client.Get(ctx, req.NamespacedName, &ing); err != nil {
		if apierrors.IsNotFound(err) {
			return r.retire(ctx, req.Namespace, req.Name, nil)
		}
		return ctrl.Result{}, err
	}
	return r.reconcileFrontend(ctx, frontendFromIngress(&ing))
}

// reconcileFrontend is Reconcile for any front door: an Ingress, or an
// HTTPRoute's backends in one namespace.
func (r *IngressReconciler) reconcileFrontend(ctx context.Context, fe frontend) (ctrl.Result, error) {
	l := newLookup(r.resolver)
	res, err := r.resolver.resolve(ctx, fe)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !res.Enabled {
		return r.retire(ctx, fe.Namespace, fe.Key, fe.Object)
	}
	l.remember(fe, res)
	if r.scope.excludes(ctx, fe.Namespace) {
		r.warn(fe.Object, ReasonUnprotectedPods, fmt.Sprintf("namespace %s is outside the webhook's scope (kube-system, Gatehouse's own, gatehouse.dev/injection=disabled, or left out by the namespaceSelector of the webhook configuration), so its Pods cannot get the sidecar", fe.Namespace))
		return ctrl.Result{RequeueAfter: problemRepeat}, nil
	}

	problems := res.Problems
	healthy := !res.Blocked
	type app struct {
		svc     *corev1.Service
		members []member
		out     outcome
	}
	var apps []app
	for _, b := range res.Backends {
		ms, err := l.membersOfService(ctx, fe.Namespace, b.Service.Name)
		if err != nil {
			return ctrl.Result{}, err
		}
		out := decide(ms, r.resolver.image)
		// Events of one reason are folded into one series whatever their
		// message, so the consequence has a reason of its own unless it is
		// a conflict (which has no other Event).
		switch out.kind {
		case verdictLastGood:
			healthy = false
			problems = append(problems, problem{consequence(out.reason, ReasonLastGoodKept), fmt.Sprintf("Service %s: %s; its Pods keep the last good sidecar settings", b.Service.Name, out.problem)})
		case verdictDeny:
			healthy = false
			problems = append(problems, problem{consequence(out.reason, ReasonPodsRefused), fmt.Sprintf("Service %s: %s; there never were good settings, so new Pods are refused", b.Service.Name, out.problem)})
		}
		apps = append(apps, app{svc: b.Service, members: ms, out: out})
	}
	for _, p := range problems {
		r.warn(fe.Object, p.Reason, p.Message)
	}
	degraded := 0.0
	if !healthy {
		degraded = 1
	}
	r.metrics.degraded.WithLabelValues(fe.Namespace, fe.metricName()).Set(degraded)

	if healthy {
		var peers []member
		for _, a := range apps {
			peers = append(peers, a.members...)
		}
		created, err := r.ensureSecret(ctx, fe, res, peers)
		if err != nil {
			r.warn(fe.Object, ReasonSecretError, "cannot prepare the sidecar's Secret: "+err.Error())
			if errors.Is(err, errForeignSecret) {
				// Retrying cannot fix it; look again with the Warning.
				return ctrl.Result{RequeueAfter: problemRepeat}, nil
			}
			return ctrl.Result{}, err
		}
		if created {
			r.recorder.Eventf(fe.Object, nil, corev1.EventTypeNormal, ReasonProtected, "Reconcile",
				"Gatehouse protects this %s: new Pods of %d Service(s) in namespace %s get the sidecar", fe.Kind, len(res.Backends), fe.Namespace)
			ctrl.LoggerFrom(ctx).Info("Front door protected", "kind", fe.Kind, "namespace", fe.Namespace, "services", len(res.Backends))
			// The webhook reads the Secret from the cache: look at the
			// apps again once it has seen it.
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
	}

	result := ctrl.Result{}
	if res.Spec.Policy.ProviderSecret != "" {
		result.RequeueAfter = providerResync
	}
	if len(problems) > 0 {
		result.RequeueAfter = problemRepeat
	}
	var rollouts []string
	outdated, stale, blocked := 0, 0, false
	for _, a := range apps {
		st, err := r.rolloutApp(ctx, l, fe, a.svc)
		if err != nil {
			return ctrl.Result{}, err
		}
		outdated += st.outdated
		stale += st.stale
		blocked = blocked || st.blocked
		if st.message != "" {
			rollouts = append(rollouts, st.message)
		}
		if st.requeue > 0 {
			result = requeueWithin(result, st.requeue)
		}
	}
	r.metrics.unprotected.WithLabelValues(fe.Namespace, fe.metricName()).Set(float64(outdated))
	r.metrics.stale.WithLabelValues(fe.Namespace, fe.metricName()).Set(float64(stale))
	r.metrics.rolloutBlocked.WithLabelValues(fe.Namespace, fe.metricName()).Set(boolGauge(blocked))

	state := "protected"
	switch {
	case !healthy && !slices.ContainsFunc(apps, func(a app) bool { return a.out.kind == verdictLastGood || a.out.kind == verdictInject }):
		state = "refused"
	case !healthy:
		state = "last-good"
	case outdated > 0:
		state = "rolling-out"
	}
	var last string
	for _, p := range problems {
		if p.Reason != ReasonInsecureHost {
			last = p.Reason + ": " + p.Message
			break
		}
	}
	if err := r.setStatus(ctx, fe.Namespace, fe.Key, map[string]string{
		SecretAnnState: state, SecretAnnProblem: last, SecretAnnRollout: strings.Join(rollouts, "; "), SecretAnnStalePods: nonZero(stale),
	}); err != nil {
		return ctrl.Result{}, err
	}
	return result, nil
}

// errForeignSecret: the per-Ingress Secret's name is taken by a Secret
// that is not Gatehouse's.
var errForeignSecret = errors.New("secret name taken")

// consequence is the Event reason for what a refused or conflicting
// setting leads to.
func consequence(reason, otherwise string) string {
	if reason == ReasonConflict {
		return reason
	}
	return otherwise
}

// warn emits a Warning Event on the front door's object; nothing when it
// is gone.
func (r *IngressReconciler) warn(obj client.Object, reason, msg string) {
	if obj == nil {
		return
	}
	r.recorder.Eventf(obj, nil, corev1.EventTypeWarning, reason, "Reconcile", "%s", msg)
}

func nonZero(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// ensureSecret applies the per-Ingress Secret: the cookie secret (kept, or
// taken from another Ingress in front of the same apps so that their
// sessions are one, or generated), the client secret and Redis password
// copied from the provider, the live policy file and the last good spec.
// The Secret has no owner reference: deleting the Ingress must not take
// the cookie secret (and every session) with it; the controller deletes it
// itself once nothing needs it. It reports whether the Secret was new.
func (r *IngressReconciler) ensureSecret(ctx context.Context, fe frontend, res resolved, peers []member) (bool, error) {
	name := secretName(fe.Key)
	var existing corev1.Secret
	// The cache holds only Gatehouse's labelled Secrets: when it has none,
	// ask the API server, so that a user's Secret of the same name is seen
	// (and left alone).
	err := r.client.Get(ctx, client.ObjectKey{Namespace: fe.Namespace, Name: name}, &existing)
	if apierrors.IsNotFound(err) {
		err = r.apiReader.Get(ctx, client.ObjectKey{Namespace: fe.Namespace, Name: name}, &existing)
	}
	created := apierrors.IsNotFound(err)
	if err != nil && !created {
		return false, err
	}
	if !created && existing.Labels[SecretLabelIngress] != fe.Key {
		return false, fmt.Errorf("%w: a Secret named %s exists and is not Gatehouse's; delete or rename it", errForeignSecret, name)
	}
	lastGood, err := json.Marshal(res.Spec)
	if err != nil {
		return false, err
	}
	data := map[string][]byte{SecretKeyPolicy: policyFile(res.Spec.Policy), SecretKeyLastGood: lastGood}
	current := existing.Data[SecretKeyCookie]
	_, rotate := existing.Annotations[SecretAnnRotate]
	switch {
	case len(current) < 32:
		data[SecretKeyCookie] = r.peerCookie(ctx, fe, peers)
	case rotate:
		// New secret first, the previous one second: sessions under it keep
		// working and are re-issued under the new one.
		previous, _, _ := strings.Cut(string(current), "\n")
		data[SecretKeyCookie] = append(append(newCookieSecret(), '\n'), previous...)
	default:
		data[SecretKeyCookie] = current
	}
	for key, ref := range map[string]*secretRef{SecretKeyClientSecret: res.clientSecretRef, SecretKeyRedisPassword: res.redisRef, SecretKeyBrokerCA: res.brokerCARef} {
		if ref == nil {
			continue
		}
		v, err := r.readSecretKey(ctx, *ref)
		if err != nil {
			return false, err
		}
		if u := res.redisUser; key == SecretKeyRedisPassword && u != nil {
			// The namespace gets its own user's password, never the
			// credential that makes it.
			password := u.password(v)
			if err := r.redis.ensure(ctx, *u, v, password); err != nil {
				return false, err
			}
			v = password
		}
		data[key] = v
	}
	if v, ok := existing.Data[SecretKeyClientSecret]; ok && res.Spec.brokered() && res.clientSecretRef == nil {
		// The provider went to broker mode: the copy stays until no Pod's
		// sidecar reads it any more, so that a sidecar of the old mode that
		// restarts before its Pod is replaced still starts.
		reads, err := r.podsReadClientSecret(ctx, fe.Namespace, name)
		if err != nil {
			return false, err
		}
		if reads {
			data[SecretKeyClientSecret] = v
		}
	}
	made := r.now()
	if !created {
		made = secretCreated(&existing).Time
	}
	annotations := map[string]string{SecretAnnCreated: made.UTC().Format(time.RFC3339Nano)}
	if fe.Kind == KindHTTPRoute {
		annotations[SecretAnnHTTPRoute] = fe.RouteNamespace + "/" + fe.Name
	}
	if res.Spec.brokered() && r.registry != nil {
		key, err := r.registry.key(ctx)
		if err != nil {
			return false, err
		}
		annotations[SecretAnnRegistryMAC] = registryMAC(key, fe.Namespace, res.Spec.Provider, res.Spec.redirectURLs())
	}
	// Unchanged, it is not written: a reconcile that finds everything in
	// order costs the API server nothing.
	if created || !secretCurrent(&existing, fe.Key, annotations, data) {
		ac := corev1ac.Secret(name, fe.Namespace).
			WithLabels(map[string]string{SecretLabelIngress: fe.Key}).
			WithAnnotations(annotations).
			WithType(corev1.SecretTypeOpaque).
			WithData(data)
		if err := r.client.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
			return false, fmt.Errorf("apply secret %s: %w", name, err)
		}
	}
	if rotate || existing.Annotations[SecretAnnUnusedSince] != "" || len(existing.OwnerReferences) > 0 {
		// A Secret made by an earlier release had the Ingress as its
		// owner; it goes, so that a deleted Ingress does not take it along.
		patch := map[string]any{"metadata": map[string]any{
			"annotations":     map[string]any{SecretAnnRotate: nil, SecretAnnUnusedSince: nil},
			"ownerReferences": nil,
		}}
		raw, _ := json.Marshal(patch)
		if err := r.client.Patch(ctx, &existing, client.RawPatch(types.MergePatchType, raw)); err != nil {
			return false, fmt.Errorf("update annotations of %s: %w", name, err)
		}
	}
	if rotate {
		r.recorder.Eventf(fe.Object, nil, corev1.EventTypeNormal, ReasonProtected, "RotateCookieSecret",
			"new cookie secret in Secret %s; the previous one stays accepted", name)
	}
	return created, nil
}

// podsReadClientSecret reports whether a live Pod mounting the Secret name
// runs a sidecar that reads the client secret from it.
func (r *IngressReconciler) podsReadClientSecret(ctx context.Context, ns, name string) (bool, error) {
	var pods corev1.PodList
	if err := r.client.List(ctx, &pods, client.InNamespace(ns), client.MatchingFields{indexPodSecret: name}, client.UnsafeDisableDeepCopy); err != nil {
		return false, fmt.Errorf("list pods mounting %s: %w", name, err)
	}
	for i := range pods.Items {
		// Terminating Pods count: their containers may still restart.
		if phase := pods.Items[i].Status.Phase; phase == corev1.PodSucceeded || phase == corev1.PodFailed {
			continue
		}
		for _, c := range pods.Items[i].Spec.InitContainers {
			if c.Name == SidecarName && slices.ContainsFunc(c.Args, func(a string) bool {
				return strings.HasPrefix(a, "--client-secret-file="+SecretMountPath+"/")
			}) {
				return true, nil
			}
		}
	}
	return false, nil
}

// peerCookie is the cookie secret for a new per-Ingress Secret: that of
// the oldest other Ingress in front of the same apps, so that a browser's
// session is valid whichever of their Secrets a Pod mounts, else a new one.
func (r *IngressReconciler) peerCookie(ctx context.Context, fe frontend, peers []member) []byte {
	ordered := slices.Clone(peers)
	slices.SortStableFunc(ordered, func(a, b member) int {
		if c := a.fe.Created.Compare(b.fe.Created.Time); c != 0 {
			return c
		}
		return strings.Compare(a.fe.Name, b.fe.Name)
	})
	for _, m := range ordered {
		if m.fe.Key == fe.Key || !m.hasSecret {
			continue
		}
		var s corev1.Secret
		if err := r.client.Get(ctx, client.ObjectKey{Namespace: fe.Namespace, Name: secretName(m.fe.Key)}, &s); err == nil && len(s.Data[SecretKeyCookie]) >= 32 {
			return s.Data[SecretKeyCookie]
		}
	}
	return newCookieSecret()
}

// setStatus records the controller's view of an Ingress on its Secret
// (when there is one), for gatehouse status; it writes only on a change.
func (r *IngressReconciler) setStatus(ctx context.Context, ns, key string, want map[string]string) error {
	var s corev1.Secret
	if err := r.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: secretName(key)}, &s); err != nil {
		return client.IgnoreNotFound(err)
	}
	if s.Labels[SecretLabelIngress] != key {
		return nil
	}
	patch := map[string]any{}
	for k, v := range want {
		switch {
		case v == "" && s.Annotations[k] != "":
			patch[k] = nil
		case v != "" && s.Annotations[k] != v:
			patch[k] = v
		}
	}
	if len(patch) == 0 {
		return nil
	}
	raw, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": patch}})
	return client.IgnoreNotFound(r.client.Patch(ctx, &s, client.RawPatch(types.MergePatchType, raw)))
}

func (r *IngressReconciler) readSecretKey(ctx context.Context, ref secretRef) ([]byte, error) {
	var s corev1.Secret
	// Provider Secrets in Gatehouse's namespace are in the cache; a team's
	// own (gatehouse.dev/provider-secret) are not.
	reader := r.apiReader
	if ref.Namespace == r.resolver.namespace {
		reader = r.client
	}
	if err := reader.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, &s); err != nil {
		return nil, fmt.Errorf("read Secret %s/%s: %w", ref.Namespace, ref.Name, err)
	}
	v, ok := s.Data[ref.Key]
	if !ok || len(v) == 0 {
		return nil, fmt.Errorf("secret %s/%s has no key %q", ref.Namespace, ref.Name, ref.Key)
	}
	return v, nil
}

// newCookieSecret makes 32 random bytes, base64-encoded (44 bytes of key
// material on one line).
func newCookieSecret() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return []byte(base64.StdEncoding.EncodeToString(b))
}

// retire handles a front door that is gone (obj nil) or no longer enabled,
// by its key (an Ingress's name):
// Pods that carry its sidecar and are no longer meant to are replaced, and
// its Secret stays while any Pod mounts it, then for secretRetention more
// (a recreated Ingress of the same name adopts it, sessions and all), and
// then goes.
func (r *IngressReconciler) retire(ctx context.Context, ns, name string, obj client.Object) (ctrl.Result, error) {
	for _, g := range []interface{ DeleteLabelValues(...string) bool }{r.metrics.unprotected, r.metrics.stale, r.metrics.rolloutBlocked, r.metrics.degraded} {
		g.DeleteLabelValues(ns, metricName(name))
	}
	mounted, err := r.secretMounted(ctx, ns, secretName(name))
	if err != nil {
		return ctrl.Result{}, err
	}
	var pods corev1.PodList
	if err := r.client.List(ctx, &pods, client.InNamespace(ns), client.MatchingFields{indexPodIngress: name}, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, err
	}
	l := newLookup(r.resolver)
	var outdated []corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if !live(p) {
			continue
		}
		out, _, err := l.outcomeFor(ctx, p)
		if err != nil {
			return ctrl.Result{}, err
		}
		switch out.kind {
		case verdictInject, verdictLastGood:
			if out.spec.compare(p, out.portName) == sidecarOutdated {
				outdated = append(outdated, *p)
			}
		case verdictNone:
			outdated = append(outdated, *p)
		}
	}
	// The set to keep Ready: the outdated Pods' siblings (same
	// controller), replacements included.
	set, err := r.siblings(ctx, ns, outdated)
	if err != nil {
		return ctrl.Result{}, err
	}
	result := ctrl.Result{}
	if len(outdated) > 0 && (obj == nil || obj.GetAnnotations()[AnnRollout] != RolloutManual) {
		st, err := r.replaceOne(ctx, obj, set, outdated)
		if err != nil {
			return ctrl.Result{}, err
		}
		result.RequeueAfter = st.requeue
	}
	return r.collectSecret(ctx, ns, name, mounted, result)
}

// collectSecret deletes a retired Ingress's Secret once no Pod mounts it
// and secretRetention has passed since it was last needed.
func (r *IngressReconciler) collectSecret(ctx context.Context, ns, name string, mounted bool, result ctrl.Result) (ctrl.Result, error) {
	var s corev1.Secret
	if err := r.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: secretName(name)}, &s); err != nil {
		return result, client.IgnoreNotFound(err)
	}
	if s.Labels[SecretLabelIngress] != name {
		return result, nil
	}
	since, err := time.Parse(time.RFC3339, s.Annotations[SecretAnnUnusedSince])
	var patch map[string]any
	switch {
	case mounted && err == nil:
		patch = map[string]any{SecretAnnUnusedSince: nil}
	case mounted:
		// Pods going away wake the reconciler up anyway.
		return requeueWithin(result, time.Minute), nil
	case err != nil:
		patch = map[string]any{SecretAnnUnusedSince: r.now().UTC().Format(time.RFC3339)}
	case r.now().Sub(since) >= r.secretRetention:
		if err := r.client.Delete(ctx, &s, client.Preconditions{UID: &s.UID}); client.IgnoreNotFound(err) != nil {
			return result, err
		}
		ctrl.LoggerFrom(ctx).Info("Secret of a retired Ingress deleted", "secret", s.Name)
		return result, nil
	default:
		return requeueWithin(result, since.Add(r.secretRetention).Sub(r.now())+time.Second), nil
	}
	raw, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": patch}})
	if err := r.client.Patch(ctx, &s, client.RawPatch(types.MergePatchType, raw)); client.IgnoreNotFound(err) != nil {
		return result, err
	}
	return requeueWithin(result, min(r.secretRetention+time.Second, rolloutWait)), nil
}

func requeueWithin(r ctrl.Result, d time.Duration) ctrl.Result {
	if r.RequeueAfter == 0 || d < r.RequeueAfter {
		r.RequeueAfter = d
	}
	return r
}

// live reports whether p is running or about to: not terminating, not
// finished.
func live(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

// mountsSecret reports whether p has a volume of Secret name. Terminating
// Pods count: their containers may still restart.
func mountsSecret(p *corev1.Pod, name string) bool {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return false
	}
	return slices.ContainsFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == name })
}

// appRollout is what rolloutApp found and did for one app.
type appRollout struct {
	outdated, stale int
	blocked         bool
	requeue         time.Duration
	message         string
}

// rolloutApp finds the Pods behind svc whose sidecar is missing or
// enforces something else, reports them, and unless gatehouse.dev/rollout
// is manual replaces one at a time through the Eviction API (which honours
// PodDisruptionBudgets). Pods whose sidecar only has an older image or
// other resources are reported as stale and left to their next rollout.
func (r *IngressReconciler) rolloutApp(ctx context.Context, l *lookup, fe frontend, svc *corev1.Service) (appRollout, error) {
	var st appRollout
	if len(svc.Spec.Selector) == 0 {
		return st, nil
	}
	var pods corev1.PodList
	// The cache's Pods are read, never changed: no copies.
	if err := r.client.List(ctx, &pods, client.InNamespace(fe.Namespace), client.MatchingLabels(svc.Spec.Selector), client.UnsafeDisableDeepCopy); err != nil {
		return st, err
	}
	var ranges []corev1.LimitRange
	rangesRead := false
	var set, outdated []corev1.Pod
	pending := false
	for i := range pods.Items {
		p := &pods.Items[i]
		if !live(p) || p.Spec.HostNetwork {
			continue
		}
		out, _, err := l.outcomeFor(ctx, p)
		if err != nil {
			return st, err
		}
		switch out.kind {
		case verdictNone:
			if slices.ContainsFunc(p.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == SidecarName }) && p.Annotations[PodAnnIngress] != "" {
				set = append(set, *p)
				outdated = append(outdated, *p)
			}
			continue
		case verdictPending:
			// Admitted plain until the Secret exists: counted, so that a
			// Secret that cannot be made shows in the metric.
			pending = true
			if out.spec.compare(p, out.portName) == sidecarMissing {
				st.outdated++
			}
			continue
		case verdictDeny:
			// Its replacement would be refused: never evict into that.
			if out.spec.compare(p, out.portName) == sidecarMissing {
				st.outdated++
			}
			continue
		}
		if !rangesRead {
			var list corev1.LimitRangeList
			if err := r.client.List(ctx, &list, client.InNamespace(fe.Namespace)); err != nil {
				return st, err
			}
			ranges, rangesRead = list.Items, true
		}
		spec := out.spec
		spec.Resources = fitLimitRanges(spec.Resources, ranges)
		set = append(set, *p)
		switch spec.compare(p, out.portName) {
		case sidecarMissing, sidecarOutdated:
			outdated = append(outdated, *p)
		case sidecarStale:
			st.stale++
		}
	}
	st.outdated += len(outdated)
	if pending {
		st.requeue = rolloutWait
	}
	if st.stale > 0 {
		st.message = fmt.Sprintf("%d Pod(s) of Service %s run an older sidecar image or resources; they get the current one at their next rollout", st.stale, svc.Name)
	}
	if len(outdated) == 0 {
		return st, nil
	}
	if !r.scope.covers(fe.Namespace) {
		st.requeue = rolloutWait
		st.message = fmt.Sprintf("waiting for the webhook to cover namespace %s before replacing %d Pod(s)", fe.Namespace, len(outdated))
		return st, nil
	}
	if fe.Annotations[AnnRollout] == RolloutManual {
		r.warn(fe.Object, ReasonUnprotectedPods, fmt.Sprintf("%d Pod(s) of Service %s run without the current sidecar and gatehouse.dev/rollout is manual: restart them (kubectl rollout restart)", len(outdated), svc.Name))
		st.message = fmt.Sprintf("%d Pod(s) of Service %s wait for a manual restart", len(outdated), svc.Name)
		return st, nil
	}
	ev, err := r.replaceOne(ctx, fe.Object, set, outdated)
	if err != nil {
		return st, err
	}
	st.blocked = ev.blocked
	st.requeue = ev.requeue
	// No count in the message: it is recorded on the Secret for gatehouse
	// status (which counts the Pods itself), and a count would cost a write
	// at every eviction.
	st.message = fmt.Sprintf("replacing the Pods of Service %s that run without the current sidecar, one at a time", svc.Name)
	if ev.message != "" {
		st.message = ev.message
	}
	return st, nil
}

// eviction is what replaceOne did.
type eviction struct {
	blocked bool
	requeue time.Duration
	message string
}

// replaceOne evicts one outdated Pod: a Pod that is not Ready first
// (evicting it costs no capacity); otherwise one whose siblings (the Pods
// of its controller) are all there and Ready, the previous eviction's
// replacement included. One rollout state per controller, whichever front
// door asks, so that two front doors of one app never evict at once. Pods
// without a controlling owner are never evicted: nothing would recreate
// them; they are reported instead. A PodDisruptionBudget's refusal backs
// off, up to maxBlockedBackoff. obj may be nil (a deleted front door):
// then nothing is reported on it.
func (r *IngressReconciler) replaceOne(ctx context.Context, obj client.Object, set, outdated []corev1.Pod) (eviction, error) {
	var managed []corev1.Pod
	var unmanaged []string
	for _, p := range outdated {
		if metav1.GetControllerOf(&p) == nil {
			unmanaged = append(unmanaged, p.Name)
			continue
		}
		managed = append(managed, p)
	}
	var ev eviction
	if len(unmanaged) > 0 {
		r.warn(obj, ReasonUnmanagedPod, fmt.Sprintf("Pod(s) %s run without the current sidecar and have no controller to recreate them, so Gatehouse does not evict them: delete and recreate them yourself", strings.Join(unmanaged, ", ")))
		ev.message = fmt.Sprintf("%d Pod(s) without a controller wait to be recreated by hand", len(unmanaged))
	}
	if len(managed) == 0 {
		return ev, nil
	}
	// Not Ready first.
	slices.SortStableFunc(managed, func(a, b corev1.Pod) int { return boolCmp(podReady(&a), podReady(&b)) })
	victim := managed[0]
	owner := metav1.GetControllerOf(&victim).UID
	var siblings []corev1.Pod
	for _, p := range set {
		if o := metav1.GetControllerOf(&p); o != nil && o.UID == owner {
			siblings = append(siblings, p)
		}
	}

	key := victim.Namespace + "/" + string(owner)
	r.mu.Lock()
	if r.rollouts == nil {
		r.rollouts = map[string]*rolloutState{}
	}
	st, ok := r.rollouts[key]
	if !ok {
		st = &rolloutState{}
		r.rollouts[key] = st
	}
	r.mu.Unlock()
	st.mu.Lock()
	defer st.mu.Unlock()
	now := r.now()
	if now.Before(st.blockedUntil) {
		return eviction{blocked: true, requeue: st.blockedUntil.Sub(now), message: "a PodDisruptionBudget refused the last eviction; retrying later"}, nil
	}
	if podReady(&victim) {
		if st.size > 0 && len(siblings) < st.size {
			// The last eviction's replacement is not there: evicting more
			// would drain the app if it never comes (a quota, a refused
			// Pod). After forgottenSize the size is forgotten, as the
			// workload may have been scaled down.
			waited := now.Sub(st.lastEviction)
			ev.requeue = rolloutWait
			switch {
			case waited > forgottenSize:
				st.size = 0
			case waited > replacementWait:
				ev.blocked = true
				ev.message = fmt.Sprintf("the replacement of a Pod evicted %s ago has not appeared; no further Pod is evicted until it does", waited.Round(time.Second))
				r.warn(obj, ReasonRolloutBlocked, ev.message)
				return ev, nil
			default:
				return ev, nil
			}
		}
		for _, p := range siblings {
			if !podReady(&p) {
				ev.requeue = rolloutWait // wait for the replacement
				return ev, nil
			}
		}
	}
	evict := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: victim.Name, Namespace: victim.Namespace}}
	err := r.client.SubResource("eviction").Create(ctx, &victim, evict)
	switch {
	case apierrors.IsTooManyRequests(err):
		st.backoff = min(max(2*st.backoff, minBlockedBackoff), maxBlockedBackoff)
		st.blockedUntil = now.Add(st.backoff)
		r.warn(obj, ReasonRolloutBlocked, fmt.Sprintf("a PodDisruptionBudget does not allow evicting Pod %s now; retrying in %s", victim.Name, st.backoff))
		return eviction{blocked: true, requeue: st.backoff, message: fmt.Sprintf("blocked by a PodDisruptionBudget (Pod %s), retrying in %s", victim.Name, st.backoff)}, nil
	case apierrors.IsNotFound(err):
		ev.requeue = time.Second
		return ev, nil
	case err != nil:
		return ev, fmt.Errorf("evict pod %s: %w", victim.Name, err)
	}
	st.backoff, st.blockedUntil = 0, time.Time{}
	st.lastEviction, st.size = now, len(siblings)
	r.metrics.replaced.Inc()
	if obj != nil {
		r.recorder.Eventf(obj, nil, corev1.EventTypeNormal, ReasonPodReplaced, "Rollout", "evicted Pod %s so that its replacement runs the current sidecar (%d left)", victim.Name, len(managed)-1)
	}
	ctrl.LoggerFrom(ctx).Info("Pod evicted for rollout", "pod", victim.Name, "left", len(managed)-1)
	ev.requeue = rolloutWait
	return ev, nil
}

// servicesSelecting names the Services of obj's namespace whose selector
// matches its labels, found through the selector index; none on error
// (a watch handler cannot return one).
func servicesSelecting(ctx context.Context, c client.Reader, obj client.Object) []string {
	podLabels := labels.Set(obj.GetLabels())
	var out []string
	for k, v := range obj.GetLabels() {
		var svcs corev1.ServiceList
		if err := c.List(ctx, &svcs, client.InNamespace(obj.GetNamespace()), client.MatchingFields{indexServiceSelector: k + "=" + v}, client.UnsafeDisableDeepCopy); err != nil {
			return out
		}
		for i := range svcs.Items {
			if !slices.Contains(out, svcs.Items[i].Name) && selects(&svcs.Items[i], podLabels) {
				out = append(out, svcs.Items[i].Name)
			}
		}
	}
	return out
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	default:
		return 1
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// SetupWithManager registers the reconciler: Ingresses, Gatehouse's
// Secrets (by their label, so a Secret outliving its Ingress is still
// looked after), and the Services and Pods of their namespace (which
// change what is behind an Ingress).
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
	secrets := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, obj client.Object) []reconcile.Request {
		if name := obj.GetLabels()[SecretLabelIngress]; name != "" && !strings.HasPrefix(name, routeKeyPrefix) {
			return []reconcile.Request{request(obj.GetNamespace(), name)}
		}
		return nil
	})
	// A Pod matters to the Ingress whose sidecar it carries and to those in
	// front of the Services that select it.
	pods := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		var reqs []reconcile.Request
		if name := obj.GetAnnotations()[PodAnnIngress]; name != "" && !strings.HasPrefix(name, routeKeyPrefix) {
			reqs = append(reqs, request(obj.GetNamespace(), name))
		}
		for _, svc := range servicesSelecting(ctx, c, obj) {
			reqs = append(reqs, byService(ctx, obj.GetNamespace(), svc)...)
		}
		return reqs
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("ingress").
		For(&networkingv1.Ingress{}, builder.WithPredicates(gatehouseAnnotated, predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Watches(&networkingv1.Ingress{}, r.peerIngresses(), builder.WithPredicates(gatehouseAnnotated, predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Watches(&corev1.Secret{}, secrets).
		Watches(&corev1.Secret{}, r.providerSecrets(), builder.WithPredicates(inNamespace(r.resolver.namespace))).
		Watches(&corev1.Service{}, services).
		Watches(&corev1.Pod{}, pods).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}
