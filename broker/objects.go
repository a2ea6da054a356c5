package broker

import (
	"context"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

// objects are the only objects the broker reads from the API server, all
// in its own namespace: the Secrets that providers in broker mode name in
// clientSecretRef or clientKeyRef, and the registry ConfigMap. Each has an
// informer of its own that lists and watches that one object by name, with
// a metadata.name field selector. The API server authorizes such a list or
// watch as a request for the named object, so the broker's Role names its
// objects in resourceNames and grants nothing on the namespace's other
// Secrets (the webhook's CA key, the Redis admin password, Helm's release
// Secrets). An object that does not exist yet is picked up when it is
// created.
//
// The listers hand out the informers' own objects: callers must not
// modify them.
type objects struct {
	factories []informers.SharedInformerFactory
	secrets   map[string]corev1listers.SecretNamespaceLister
	registry  corev1listers.ConfigMapNamespaceLister
	// registryName is the registry ConfigMap's name.
	registryName string
}

// brokeredSecrets returns, by Secret name, the keys that providers in
// broker mode read: their clientSecretRef's and clientKeyRef's.
func brokeredSecrets(file *controllers.FileConfig) map[string][]string {
	out := map[string][]string{}
	for _, p := range file.Providers {
		if !p.Brokered() {
			continue
		}
		for _, ref := range []*controllers.SecretKeyRef{p.ClientSecretRef, p.ClientKeyRef} {
			if ref != nil && !slices.Contains(out[ref.Name], ref.Key) {
				out[ref.Name] = append(out[ref.Name], ref.Key)
			}
		}
	}
	return out
}

// newObjects prepares the informers of the Secrets in secretKeys (name to
// the keys read) and of the registry ConfigMap in namespace ns. It makes
// no request: start does.
func newObjects(cs kubernetes.Interface, ns, registry string, secretKeys map[string][]string) *objects {
	o := &objects{secrets: map[string]corev1listers.SecretNamespaceLister{}, registryName: registry}
	one := func(name string, transform toolscache.TransformFunc) informers.SharedInformerFactory {
		f := informers.NewSharedInformerFactoryWithOptions(cs, 0,
			informers.WithNamespace(ns),
			informers.WithTweakListOptions(func(opts *metav1.ListOptions) {
				opts.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
			}),
			informers.WithTransform(transform))
		o.factories = append(o.factories, f)
		return f
	}
	for _, name := range slices.Sorted(maps.Keys(secretKeys)) {
		keep := secretKeys[name]
		// The informer keeps only the keys providers read, so the broker's
		// memory holds no credential it does not use (a TLS Secret's
		// certificate next to the client key, say).
		f := one(name, func(obj any) (any, error) {
			if s, ok := obj.(*corev1.Secret); ok {
				s.ManagedFields = nil
				maps.DeleteFunc(s.Data, func(k string, _ []byte) bool { return !slices.Contains(keep, k) })
				s.StringData = nil
			}
			return obj, nil
		})
		o.secrets[name] = f.Core().V1().Secrets().Lister().Secrets(ns)
	}
	f := one(registry, toolscache.TransformFunc(func(obj any) (any, error) {
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			cm.ManagedFields = nil
		}
		return obj, nil
	}))
	o.registry = f.Core().V1().ConfigMaps().Lister().ConfigMaps(ns)
	return o
}

// start runs the informers until ctx ends.
func (o *objects) start(ctx context.Context) {
	for _, f := range o.factories {
		f.StartWithContext(ctx)
	}
}

// waitForSync reports whether every informer has listed its object, and
// false when ctx ends first.
func (o *objects) waitForSync(ctx context.Context) bool {
	for _, f := range o.factories {
		if f.WaitForCacheSyncWithContext(ctx).AsError() != nil {
			return false
		}
	}
	return true
}

// shutdown waits for the informers to stop, once start's ctx has ended.
func (o *objects) shutdown() {
	for _, f := range o.factories {
		f.Shutdown()
	}
}

// secret returns the Secret name, one of those newObjects was given; a
// NotFound error when it does not exist.
func (o *objects) secret(name string) (*corev1.Secret, error) {
	l, ok := o.secrets[name]
	if !ok {
		return nil, fmt.Errorf("secret %q is not one a provider in broker mode names", name)
	}
	return l.Get(name)
}

// registryMap returns the registry ConfigMap; a NotFound error when it
// does not exist.
func (o *objects) registryMap() (*corev1.ConfigMap, error) {
	return o.registry.Get(o.registryName)
}
