package controllers

import (
	"context"
	"fmt"

	"encoding/json"
	"net/http"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// The webhook's path and its marker; config/webhook is generated from it.
// Scope (namespaces) is set in the chart; the generated manifest is the
// envtest and kustomize base.
// +kubebuilder:webhook:path=/mutate-v1-pod,mutating=true,failurePolicy=fail,sideEffects=None,groups="",resources=pods,verbs=create,versions=v1,name=pods.gatehouse.dev,admissionReviewVersions=v1,reinvocationPolicy=IfNeeded

// WebhookPath is where the Pod mutating webhook is served.
const WebhookPath = "/mutate-v1-pod"

// WebhookName is the webhook's name in its MutatingWebhookConfiguration.
const WebhookName = "pods.gatehouse.dev"

// PodInjector is the mutating admission webhook for Pods: at creation it
// injects the sidecar of the enabled Ingress whose backend Service selects
// the Pod. It decides from the manager's cache and never writes anything
// but the Pod being created.
type PodInjector struct {
	resolver *resolver
	decoder  admission.Decoder
	metrics  *metrics
}

var _ admission.Handler = (*PodInjector)(nil)

// Handle implements admission.Handler.
func (p *PodInjector) Handle(ctx context.Context, req admission.Request) admission.Response {
	pod := &corev1.Pod{}
	if err := p.decoder.Decode(req, pod); err != nil {
		p.metrics.webhook(decisionError)
		return admission.Errored(http.StatusBadRequest, err)
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	d, err := p.decide(ctx, pod)
	if err != nil {
		// Fail closed: the API server refuses the Pod (failurePolicy
		// Fail) rather than start it unprotected.
		p.metrics.webhook(decisionError)
		return admission.Errored(http.StatusInternalServerError, err)
	}
	if d.deny != "" {
		p.metrics.webhook(d.reason)
		return admission.Denied(d.deny)
	}
	if !d.inject {
		p.metrics.webhook(d.reason)
		return admission.Allowed(d.reason)
	}
	mutated := pod.DeepCopy()
	if !inject(mutated, d.spec, d.portName) {
		p.metrics.webhook(decisionNoPort)
		return admission.Allowed(decisionNoPort)
	}
	raw, err := json.Marshal(mutated)
	if err != nil {
		p.metrics.webhook(decisionError)
		return admission.Errored(http.StatusInternalServerError, err)
	}
	p.metrics.webhook(decisionInjected)
	return admission.PatchResponseFromRaw(req.Object.Raw, raw)
}

// Webhook decisions, the label of gatehouse_controller_webhook_decisions_total.
const (
	decisionInjected    = "injected"
	decisionNotSelected = "not-selected"
	decisionNoPort      = "no-named-port"
	decisionConflict    = "conflict"
	decisionBlocked     = "blocked"
	decisionError       = "error"
)

type decision struct {
	inject   bool
	deny     string // refuse the Pod, with this message
	reason   string
	spec     sidecarSpec
	portName string
}

// decide finds the enabled Ingress that protects pod.
func (p *PodInjector) decide(ctx context.Context, pod *corev1.Pod) (decision, error) {
	claims, err := claimsFor(ctx, p.resolver, pod)
	if err != nil {
		return decision{}, err
	}
	d := pick(claims)
	if d.reason == decisionBlocked || d.reason == decisionConflict {
		// Fail closed for an app that is protected now: while its Ingress's
		// annotations are refused (or conflict), a new Pod would start
		// without the sidecar, so it is refused until they are fixed. An
		// Ingress that never got protected (no Secret yet) changes nothing.
		for _, c := range claims {
			var s corev1.Secret
			err := p.resolver.reader.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: secretName(c.ingress)}, &s)
			if err == nil {
				d.deny = fmt.Sprintf("Gatehouse protects this Pod through Ingress %s, whose gatehouse.dev annotations are refused or conflict with another Ingress; fix them (see the Ingress's Warning Events) or remove gatehouse.dev/enabled", c.ingress)
				return d, nil
			}
			if !apierrors.IsNotFound(err) {
				return decision{}, err
			}
		}
	}
	return d, nil
}

// claim is an enabled Ingress's claim on a Pod.
type claim struct {
	ingress  string
	res      resolved
	portName string
}

// indexBackendService indexes Ingresses by the names of their backend
// Services, so the webhook finds the Ingresses in front of a Pod without
// reading every Ingress of the namespace.
const indexBackendService = "gatehouse.dev/backend-service"

// indexServiceSelector indexes Services by each key=value pair of their
// selector, so the webhook finds the Services that may select a Pod from
// the Pod's own labels.
const indexServiceSelector = "gatehouse.dev/selector-pair"

// selectorPairs is the indexer function for indexServiceSelector.
func selectorPairs(obj client.Object) []string {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return nil
	}
	pairs := make([]string, 0, len(svc.Spec.Selector))
	for k, v := range svc.Spec.Selector {
		pairs = append(pairs, k+"="+v)
	}
	return pairs
}

// backendServiceNames is the indexer function for indexBackendService.
func backendServiceNames(obj client.Object) []string {
	ing, ok := obj.(*networkingv1.Ingress)
	if !ok {
		return nil
	}
	var names []string
	for _, b := range serviceBackends(ing) {
		if !slices.Contains(names, b.Name) {
			names = append(names, b.Name)
		}
	}
	return names
}

// claimsFor resolves every enabled Ingress in pod's namespace whose backend
// Services select pod: first the Services that select the Pod, then the
// Ingresses in front of them (by index), so namespaces with many Ingresses
// stay fast. Cached objects are read without copies and never modified.
func claimsFor(ctx context.Context, r *resolver, pod *corev1.Pod) ([]claim, error) {
	podLabels := labels.Set(pod.Labels)
	var selecting []corev1.Service
	for k, v := range pod.Labels {
		var svcs corev1.ServiceList
		if err := r.reader.List(ctx, &svcs, client.InNamespace(pod.Namespace),
			client.MatchingFields{indexServiceSelector: k + "=" + v}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		for _, svc := range svcs.Items {
			if selects(&svc, podLabels) && !slices.ContainsFunc(selecting, func(s corev1.Service) bool { return s.Name == svc.Name }) {
				selecting = append(selecting, svc)
			}
		}
	}
	var claims []claim
	seen := map[string]bool{}
	for i := range selecting {
		svcs := corev1.ServiceList{Items: selecting}
		var list networkingv1.IngressList
		if err := r.reader.List(ctx, &list, client.InNamespace(pod.Namespace),
			client.MatchingFields{indexBackendService: svcs.Items[i].Name}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		for j := range list.Items {
			ing := &list.Items[j]
			if seen[ing.Name] || ing.Annotations[AnnEnabled] == "" {
				continue
			}
			seen[ing.Name] = true
			res, err := r.resolve(ctx, ing)
			if err != nil {
				return nil, err
			}
			if !res.Enabled {
				continue
			}
			if res.Blocked {
				claims = append(claims, claim{ingress: ing.Name, res: res})
				continue
			}
			for _, b := range res.Backends {
				if selects(b.Service, podLabels) && hasPortName(pod, b.PortName) {
					claims = append(claims, claim{ingress: ing.Name, res: res, portName: b.PortName})
					break
				}
			}
		}
	}
	return claims, nil
}

// pick decides from the claims: exactly one usable claim, or several that
// agree, injects; disagreeing claims inject nothing (a conflict).
func pick(claims []claim) decision {
	var usable []claim
	for _, c := range claims {
		if !c.res.Blocked && c.portName != "" {
			usable = append(usable, c)
		}
	}
	switch {
	case len(usable) == 0 && len(claims) > 0:
		return decision{reason: decisionBlocked}
	case len(usable) == 0:
		return decision{reason: decisionNotSelected}
	}
	first := usable[0]
	for _, c := range usable[1:] {
		if c.portName != first.portName || !samePolicy(c.res.Spec, first.res.Spec) {
			return decision{reason: decisionConflict}
		}
	}
	return decision{inject: true, reason: decisionInjected, spec: first.res.Spec, portName: first.portName}
}

// samePolicy reports whether two Ingresses ask for the same sidecar.
func samePolicy(a, b sidecarSpec) bool {
	a.Ingress, b.Ingress = "", ""
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func selects(svc *corev1.Service, podLabels labels.Set) bool {
	if len(svc.Spec.Selector) == 0 {
		return false
	}
	return labels.SelectorFromValidatedSet(svc.Spec.Selector).Matches(podLabels)
}

func hasPortName(pod *corev1.Pod, name string) bool {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}
