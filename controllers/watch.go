package controllers

import (
	"context"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// gatehouseAnnotated passes events of objects that carry a gatehouse.dev/
// annotation, or carried one before an update: the other Ingresses of a
// cluster cost the controller their watch and nothing more.
var gatehouseAnnotated = predicate.Funcs{
	CreateFunc:  func(e event.CreateEvent) bool { return hasGatehouseAnnotationObj(e.Object) },
	DeleteFunc:  func(e event.DeleteEvent) bool { return hasGatehouseAnnotationObj(e.Object) },
	GenericFunc: func(e event.GenericEvent) bool { return hasGatehouseAnnotationObj(e.Object) },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return hasGatehouseAnnotationObj(e.ObjectOld) || hasGatehouseAnnotationObj(e.ObjectNew)
	},
}

// enabledChanged passes the Ingress events that can change which
// namespaces the webhook must see: gatehouse.dev/enabled appearing,
// going, or changing its value.
var enabledChanged = predicate.Funcs{
	CreateFunc:  func(e event.CreateEvent) bool { return hasEnabled(e.Object) },
	DeleteFunc:  func(e event.DeleteEvent) bool { return hasEnabled(e.Object) },
	GenericFunc: func(e event.GenericEvent) bool { return hasEnabled(e.Object) },
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, ook := e.ObjectOld.GetAnnotations()[AnnEnabled]
		n, nok := e.ObjectNew.GetAnnotations()[AnnEnabled]
		return ook != nok || o != n
	},
}

func hasEnabled(obj client.Object) bool {
	_, ok := obj.GetAnnotations()[AnnEnabled]
	return ok
}

// inNamespace passes events of objects in namespace ns.
func inNamespace(ns string) predicate.Predicate {
	return predicate.NewPredicateFuncs(func(obj client.Object) bool { return obj.GetNamespace() == ns })
}

// providerSecrets maps a change of a provider's Secret in Gatehouse's
// namespace (a rotated client secret or Redis password) to the enabled
// Ingresses that use that provider, which copy it into their Secrets. It
// replaces a periodic resync of every Ingress; rotations are rare.
func (r *IngressReconciler) providerSecrets() handler.EventHandler {
	return providerUsers(r.resolver.file, r.resolver.broker.tlsSecret, r.client, func() client.ObjectList { return &networkingv1.IngressList{} })
}

// providerUsers maps a change of a provider's Secret to the front doors
// of the kind newList lists that use that provider; a change of the
// broker's certificate Secret (brokerTLS) to those of every provider in
// broker mode, which copy its CA.
func providerUsers(file *FileConfig, brokerTLS string, c client.Reader, newList func() client.ObjectList) handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		providers := providersUsing(file, obj.GetName())
		if obj.GetName() == brokerTLS {
			for _, p := range file.Providers {
				if p.Brokered() {
					providers = append(providers, p.Name)
				}
			}
		}
		if len(providers) == 0 {
			return nil
		}
		list := newList()
		if err := c.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
			return nil
		}
		items, err := meta.ExtractList(list)
		if err != nil {
			return nil
		}
		var reqs []reconcile.Request
		for _, item := range items {
			if o, ok := item.(client.Object); ok && usesProvider(file, o.GetAnnotations(), providers) {
				reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}})
			}
		}
		return reqs
	})
}

// usesProvider reports whether an enabled front door with annotations ann
// uses one of providers from the config file (not a team's own
// gatehouse.dev/provider-secret).
func usesProvider(file *FileConfig, ann map[string]string, providers []string) bool {
	if ann[AnnEnabled] == "" || ann[AnnProviderSecret] != "" {
		return false
	}
	p := ann[AnnProvider]
	if p == "" {
		p = file.Defaults.Provider
	}
	return slices.Contains(providers, p)
}

// peerIngresses maps an Ingress to the other enabled Ingresses in front
// of the same Services: they are merged, so a new, changed or deleted one
// changes what its peers decide (a conflict is reported on each of them).
// Nothing else would look at the peers again.
func (r *IngressReconciler) peerIngresses() handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		var reqs []reconcile.Request
		for _, svc := range backendServiceNames(obj) {
			var list networkingv1.IngressList
			if err := r.client.List(ctx, &list, client.InNamespace(obj.GetNamespace()), client.MatchingFields{indexBackendService: svc}, client.UnsafeDisableDeepCopy); err != nil {
				return reqs
			}
			for i := range list.Items {
				peer := types.NamespacedName{Namespace: list.Items[i].Namespace, Name: list.Items[i].Name}
				if peer.Name == obj.GetName() || list.Items[i].Annotations[AnnEnabled] == "" ||
					slices.ContainsFunc(reqs, func(r reconcile.Request) bool { return r.NamespacedName == peer }) {
					continue
				}
				reqs = append(reqs, reconcile.Request{NamespacedName: peer})
			}
		}
		return reqs
	})
}
