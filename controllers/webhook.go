package controllers

import (
	"context"
	"encoding/json"
	"net/http"

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
	return pick(claims), nil
}

// claim is an enabled Ingress's claim on a Pod.
type claim struct {
	ingress  string
	res      resolved
	portName string
}

// claimsFor resolves every enabled Ingress in pod's namespace whose backend
// Services select pod. Cheap checks come first, so namespaces with many
// Ingresses stay fast.
func claimsFor(ctx context.Context, r *resolver, pod *corev1.Pod) ([]claim, error) {
	var list networkingv1.IngressList
	if err := r.reader.List(ctx, &list, client.InNamespace(pod.Namespace)); err != nil {
		return nil, err
	}
	var claims []claim
	podLabels := labels.Set(pod.Labels)
	for i := range list.Items {
		ing := &list.Items[i]
		if ing.Annotations[AnnEnabled] == "" || !selectsAny(ctx, r, ing, podLabels) {
			continue
		}
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

// selectsAny reports whether some backend Service of ing selects the
// labels, from the cache.
func selectsAny(ctx context.Context, r *resolver, ing *networkingv1.Ingress, podLabels labels.Set) bool {
	for _, sb := range serviceBackends(ing) {
		var svc corev1.Service
		if err := r.reader.Get(ctx, client.ObjectKey{Namespace: ing.Namespace, Name: sb.Name}, &svc); err == nil && selects(&svc, podLabels) {
			return true
		}
	}
	return false
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
