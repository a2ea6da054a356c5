package controllers

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The controller's client-side limit on API requests, all clients together.
// A newly protected Ingress whose Pods predate it costs about ten requests
// (its Secret, Events, evictions, status), so a fresh install of a thousand
// Ingresses needs about 170 a second to be done within a minute; at 50 it
// took 206 s. The limit is kept rather than turned off (API Priority and
// Fairness alone): the controller's request rate is otherwise bounded only
// by its four workers, and a reconcile loop gone wrong would then be held
// back by nobody but the API server. APF still queues the controller's
// service account (FlowSchema service-accounts, priority level
// workload-low) fairly against everything else.
const (
	DefaultKubeAPIQPS   = 200
	DefaultKubeAPIBurst = 400
)

// indexPodIngress indexes Pods by their gatehouse.dev/ingress annotation,
// the front door whose sidecar they carry.
const indexPodIngress = "gatehouse.dev/pod-ingress"

// indexPodSecret indexes Pods by the per-Ingress Secrets they mount.
const indexPodSecret = "gatehouse.dev/pod-mounts" //nolint:gosec // an index name, not a credential

// indexPodOwner indexes Pods by the UID of their controller (a ReplicaSet,
// StatefulSet, ...), the set a rollout keeps Ready.
const indexPodOwner = "gatehouse.dev/pod-owner"

// clientConfig is cfg with the controller's request budget: one token
// bucket shared by every client made from it (the cache's, the API
// reader's, the Event recorder's, leader election's), so the flags bound
// what the process asks of the API server.
func clientConfig(cfg *rest.Config, c Config) *rest.Config {
	out := rest.CopyConfig(cfg)
	out.QPS, out.Burst = float32(c.KubeAPIQPS), c.KubeAPIBurst
	out.RateLimiter = nil
	if c.KubeAPIQPS > 0 {
		out.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(out.QPS, out.Burst)
	} else {
		out.QPS = -1 // no client-side limit
	}
	return out
}

// cacheOptions are the informers' settings: managed fields dropped from
// everything, Pods cut down to what the controller reads, and Secrets
// limited to Gatehouse's own (labelled) plus the provider Secrets in its
// namespace.
func cacheOptions(own string, file *FileConfig, brokerTLS string) (cache.Options, error) {
	owned, err := labels.Parse(SecretLabelIngress)
	if err != nil {
		return cache.Options{}, err
	}
	providers := providerSecretNames(file)
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Transform: trimPod},
			&corev1.Secret{}: {Namespaces: map[string]cache.Config{
				cache.AllNamespaces: {LabelSelector: owned},
				// In Gatehouse's namespace every Secret is watched (a
				// Secret's name cannot be selected by label), and only the
				// providers' keep their data.
				own: {Transform: keepSecretData(providers, brokerTLS)},
			}},
		},
	}, nil
}

// providerSecretNames are the Secrets in Gatehouse's namespace that the
// config file's providers refer to and the controller copies from. A
// provider's clientKeyRef is not among them: only gatehouse broker reads
// the private key, so the controller's cache drops its data and no change
// of it reconciles anything.
func providerSecretNames(file *FileConfig) []string {
	var names []string
	for _, p := range file.Providers {
		refs := []*SecretKeyRef{p.ClientSecretRef}
		if p.SessionStore != nil {
			refs = append(refs, p.SessionStore.PasswordSecretRef)
		}
		for _, r := range refs {
			if r != nil && !slices.Contains(names, r.Name) {
				names = append(names, r.Name)
			}
		}
	}
	slices.Sort(names)
	return names
}

// providersUsing lists the configured providers that refer to Secret name
// in Gatehouse's namespace.
func providersUsing(file *FileConfig, name string) []string {
	var out []string
	for _, p := range file.Providers {
		if (p.ClientSecretRef != nil && p.ClientSecretRef.Name == name) ||
			(p.SessionStore != nil && p.SessionStore.PasswordSecretRef != nil && p.SessionStore.PasswordSecretRef.Name == name) {
			out = append(out, p.Name)
		}
	}
	return out
}

// keepSecretData drops managed fields, and the data of every Secret
// neither named in keep nor Gatehouse's own (Helm's release Secrets, the
// webhook certificate), from Secrets of Gatehouse's namespace. Of the
// broker's certificate Secret, brokerTLS, only the CA stays.
func keepSecretData(keep []string, brokerTLS string) toolscache.TransformFunc {
	strip := cache.TransformStripManagedFields()
	return func(obj any) (any, error) {
		obj, err := strip(obj)
		if err != nil {
			return obj, err
		}
		if s, ok := obj.(*corev1.Secret); ok && s.Name == brokerTLS && !slices.Contains(keep, s.Name) {
			s.Data = map[string][]byte{"ca.crt": s.Data["ca.crt"]}
			s.StringData, s.Annotations = nil, nil
		} else if ok && !slices.Contains(keep, s.Name) && s.Labels[SecretLabelIngress] == "" {
			s.Data, s.StringData = nil, nil
			s.Annotations = nil
		}
		return obj, nil
	}
}

// trimPod keeps of a Pod only what the controller reads: which apps it
// belongs to (labels, named container ports), Gatehouse's sidecar
// (annotations, the init container, its Secret volume), its controller,
// and whether it is running and Ready. At ten thousand Pods the full
// objects (managed fields, environment, probes, every status field) are
// most of the controller's memory. The webhook decides on the Pod in the
// admission request, never on a cached one.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		TypeMeta: p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:              p.Name,
			Namespace:         p.Namespace,
			UID:               p.UID,
			ResourceVersion:   p.ResourceVersion,
			CreationTimestamp: p.CreationTimestamp,
			DeletionTimestamp: p.DeletionTimestamp,
			Labels:            p.Labels,
			OwnerReferences:   p.OwnerReferences,
		},
		Spec: corev1.PodSpec{HostNetwork: p.Spec.HostNetwork},
		Status: corev1.PodStatus{
			Phase: p.Status.Phase,
		},
	}
	for k, v := range p.Annotations {
		if strings.HasPrefix(k, AnnotationPrefix) {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	for _, c := range p.Spec.Containers {
		tc := corev1.Container{Name: c.Name}
		for _, port := range c.Ports {
			if port.Name != "" {
				tc.Ports = append(tc.Ports, corev1.ContainerPort{Name: port.Name, ContainerPort: port.ContainerPort})
			}
		}
		out.Spec.Containers = append(out.Spec.Containers, tc)
	}
	for _, c := range p.Spec.InitContainers {
		if c.Name == SidecarName {
			out.Spec.InitContainers = []corev1.Container{{Name: c.Name, Image: c.Image, Args: c.Args, Ports: c.Ports, Resources: c.Resources}}
		}
	}
	for _, v := range p.Spec.Volumes {
		if v.Secret != nil {
			out.Spec.Volumes = append(out.Spec.Volumes, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{
				Secret: &corev1.SecretVolumeSource{SecretName: v.Secret.SecretName},
			}})
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return out, nil
}

// podIngress is the indexer function for indexPodIngress.
func podIngress(obj client.Object) []string {
	if name := obj.GetAnnotations()[PodAnnIngress]; name != "" {
		return []string{name}
	}
	return nil
}

// podSecrets is the indexer function for indexPodSecret: the Secrets of
// the Pod's Secret volumes that are named like a per-Ingress Secret.
func podSecrets(obj client.Object) []string {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return nil
	}
	var out []string
	for _, v := range p.Spec.Volumes {
		if v.Secret != nil && strings.HasPrefix(v.Secret.SecretName, secretName("")) {
			out = append(out, v.Secret.SecretName)
		}
	}
	return out
}

// podOwner is the indexer function for indexPodOwner.
func podOwner(obj client.Object) []string {
	if ref := metav1.GetControllerOfNoCopy(obj); ref != nil {
		return []string{string(ref.UID)}
	}
	return nil
}

// hasGatehouseAnnotationObj reports whether obj carries any gatehouse.dev/
// annotation: an Ingress without one is no business of the controller's
// beyond its watch.
func hasGatehouseAnnotationObj(obj client.Object) bool {
	return obj != nil && hasGatehouseAnnotation(obj.GetAnnotations())
}

// secretMounted reports whether a Pod of namespace ns that may still run
// mounts Secret name (terminating Pods count: their containers may still
// restart).
func (r *IngressReconciler) secretMounted(ctx context.Context, ns, name string) (bool, error) {
	var pods corev1.PodList
	if err := r.client.List(ctx, &pods, client.InNamespace(ns), client.MatchingFields{indexPodSecret: name}, client.UnsafeDisableDeepCopy); err != nil {
		return false, err
	}
	for i := range pods.Items {
		if mountsSecret(&pods.Items[i], name) {
			return true, nil
		}
	}
	return false, nil
}

// siblings lists the live Pods that share a controller with any of pods,
// replacements included.
func (r *IngressReconciler) siblings(ctx context.Context, ns string, pods []corev1.Pod) ([]corev1.Pod, error) {
	var out []corev1.Pod
	var seen []types.UID
	for i := range pods {
		owner := metav1.GetControllerOfNoCopy(&pods[i])
		if owner == nil || slices.Contains(seen, owner.UID) {
			continue
		}
		seen = append(seen, owner.UID)
		var list corev1.PodList
		if err := r.client.List(ctx, &list, client.InNamespace(ns), client.MatchingFields{indexPodOwner: string(owner.UID)}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		for j := range list.Items {
			if live(&list.Items[j]) {
				out = append(out, list.Items[j])
			}
		}
	}
	return out, nil
}

// secretCurrent reports whether the per-Ingress Secret s already holds
// what ensureSecret would apply: its label, annotations, type and data.
func secretCurrent(s *corev1.Secret, key string, annotations map[string]string, data map[string][]byte) bool {
	for k, v := range annotations {
		if s.Annotations[k] != v {
			return false
		}
	}
	return s.Labels[SecretLabelIngress] == key &&
		s.Type == corev1.SecretTypeOpaque &&
		maps.EqualFunc(s.Data, data, bytes.Equal)
}
