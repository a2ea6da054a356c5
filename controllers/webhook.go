package controllers

import (
	"context"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// The webhook's path and its marker; config/webhook is generated from it.
// Scope (namespaces, match conditions) is set in the chart and kept current
// by the controller; the generated manifest is the envtest and kustomize
// base.
// +kubebuilder:webhook:path=/mutate-v1-pod,mutating=true,failurePolicy=fail,sideEffects=None,groups="",resources=pods,verbs=create,versions=v1,name=pods.gatehouse.dev,admissionReviewVersions=v1,reinvocationPolicy=IfNeeded,timeoutSeconds=3

// WebhookPath is where the Pod mutating webhook is served.
const WebhookPath = "/mutate-v1-pod"

// WebhookName is the webhook's name in its MutatingWebhookConfiguration.
const WebhookName = "pods.gatehouse.dev"

// PodInjector is the mutating admission webhook for Pods: at creation it
// injects the sidecar of the enabled front doors whose backend Service
// selects the Pod. It decides from the manager's cache and never writes
// anything but the Pod being created.
type PodInjector struct {
	resolver *resolver
	decoder  admission.Decoder
	metrics  *metrics
}

var _ admission.Handler = (*PodInjector)(nil)

// Handle implements admission.Handler. The response is a JSON patch of
// only what Gatehouse adds or rewrites, so fields of the Pod that its
// compiled API types lack survive.
func (p *PodInjector) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	defer func() { p.metrics.decisionTime.Observe(time.Since(start).Seconds()) }()
	pod := &corev1.Pod{}
	if err := p.decoder.Decode(req, pod); err != nil {
		p.metrics.webhook(decisionError)
		return admission.Errored(http.StatusBadRequest, err)
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	if pod.Spec.HostNetwork {
		// The sidecar cannot take a port over in the node's network; the
		// chart's matchConditions keep such Pods away already.
		p.metrics.webhook(decisionHostNetwork)
		return admission.Allowed(decisionHostNetwork)
	}
	out, _, err := newLookup(p.resolver).outcomeFor(ctx, pod)
	if err != nil {
		// Fail closed: the API server refuses the Pod (failurePolicy
		// Fail) rather than start it unprotected.
		p.metrics.webhook(decisionError)
		return admission.Errored(http.StatusInternalServerError, err)
	}
	switch out.kind {
	case verdictNone:
		p.metrics.webhook(decisionNotSelected)
		return admission.Allowed(decisionNotSelected)
	case verdictPending:
		p.metrics.webhook(decisionPending)
		return admission.Allowed(decisionPending)
	case verdictDeny:
		p.metrics.webhook(decisionRefused)
		return admission.Denied(fmt.Sprintf("Gatehouse is enabled for this Pod's app but has no usable settings yet: %s. Fix the annotations (see the Warning Events, or run gatehouse status -n %s) or remove gatehouse.dev/enabled", out.problem, pod.Namespace))
	}
	spec := out.spec
	ranges, err := p.limitRanges(ctx, pod.Namespace)
	if err != nil {
		p.metrics.webhook(decisionError)
		return admission.Errored(http.StatusInternalServerError, err)
	}
	spec.Resources = fitLimitRanges(spec.Resources, ranges)
	mutated := pod.DeepCopy()
	if !inject(mutated, spec, out.portName) {
		p.metrics.webhook(decisionNoPort)
		return admission.Allowed(decisionNoPort)
	}
	decision := decisionInjected
	if out.kind == verdictLastGood {
		decision = decisionLastGood
	}
	p.metrics.webhook(decision)
	return admission.Patched(decision, injectionPatch(pod, mutated)...)
}

func (p *PodInjector) limitRanges(ctx context.Context, ns string) ([]corev1.LimitRange, error) {
	var list corev1.LimitRangeList
	if err := p.resolver.reader.List(ctx, &list, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list limit ranges: %w", err)
	}
	return list.Items, nil
}

// Webhook decisions, the label of gatehouse_controller_webhook_decisions_total.
const (
	decisionInjected    = "injected"
	decisionLastGood    = "injected-last-good"
	decisionNotSelected = "not-selected"
	decisionPending     = "secret-pending"
	decisionNoPort      = "no-named-port"
	decisionHostNetwork = "host-network"
	decisionRefused     = "refused"
	decisionError       = "error"
)
