package controllers

import (
	"context"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

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

// lookup finds and resolves the front doors of apps, remembering what it
// resolved so that one admission or one reconcile resolves each front door
// once. It is not safe for concurrent use; make one per decision.
type lookup struct {
	r     *resolver
	front map[string]resolvedFront
}

type resolvedFront struct {
	fe  frontend
	res resolved
}

func newLookup(r *resolver) *lookup {
	return &lookup{r: r, front: map[string]resolvedFront{}}
}

// frontendsOf resolves the enabled front doors of namespace ns that name
// Service svc as a backend.
func (l *lookup) frontendsOf(ctx context.Context, ns, svc string) ([]resolvedFront, error) {
	var list networkingv1.IngressList
	if err := l.r.reader.List(ctx, &list, client.InNamespace(ns),
		client.MatchingFields{indexBackendService: svc}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	var out []resolvedFront
	for i := range list.Items {
		ing := &list.Items[i]
		if ing.Annotations[AnnEnabled] == "" {
			continue
		}
		rf, ok := l.front[ing.Name]
		if !ok {
			fe := frontendFromIngress(ing)
			res, err := l.r.resolve(ctx, fe)
			if err != nil {
				return nil, err
			}
			rf = l.remember(fe, res)
		}
		if rf.res.Enabled {
			out = append(out, rf)
		}
	}
	routes, err := l.routeFrontendsOf(ctx, ns, svc)
	if err != nil {
		return nil, err
	}
	return append(out, routes...), nil
}

// remember keeps what resolve said of fe for the rest of the decision.
func (l *lookup) remember(fe frontend, res resolved) resolvedFront {
	rf := resolvedFront{fe: fe, res: res}
	l.front[fe.Key] = rf
	return rf
}

// membersOfService lists the members of the app behind Service svc: each
// enabled front door with its port name for svc, and its Secret's state.
func (l *lookup) membersOfService(ctx context.Context, ns, svc string) ([]member, error) {
	fronts, err := l.frontendsOf(ctx, ns, svc)
	if err != nil {
		return nil, err
	}
	var out []member
	for _, rf := range fronts {
		i := slices.IndexFunc(rf.res.Backends, func(b backend) bool { return b.Service.Name == svc })
		if i < 0 {
			continue // a numeric target port: reported, never injected
		}
		m := member{fe: rf.fe, res: rf.res, portName: rf.res.Backends[i].PortName}
		if err := l.secretOf(ctx, &m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// secretOf fills in m's Secret state from the cache, which holds only
// Gatehouse's labelled Secrets.
func (l *lookup) secretOf(ctx context.Context, m *member) error {
	var s corev1.Secret
	err := l.r.reader.Get(ctx, client.ObjectKey{Namespace: m.fe.Namespace, Name: secretName(m.fe.Key)}, &s)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if s.Labels[SecretLabelIngress] != m.fe.Key {
		return nil
	}
	m.hasSecret = true
	m.secretCreated = secretCreated(&s)
	m.lastGood = lastGoodOf(&s)
	return nil
}

// secretCreated is when a per-Ingress Secret was made: its annotation,
// else its creationTimestamp.
func secretCreated(s *corev1.Secret) metav1.Time {
	if t, err := time.Parse(time.RFC3339Nano, s.Annotations[SecretAnnCreated]); err == nil {
		return metav1.NewTime(t)
	}
	return s.CreationTimestamp
}

// selectingServices lists the Services of pod's namespace whose selector
// matches pod, through the selector index.
func (l *lookup) selectingServices(ctx context.Context, pod *corev1.Pod) ([]string, error) {
	podLabels := labels.Set(pod.Labels)
	var out []string
	for k, v := range pod.Labels {
		var svcs corev1.ServiceList
		if err := l.r.reader.List(ctx, &svcs, client.InNamespace(pod.Namespace),
			client.MatchingFields{indexServiceSelector: k + "=" + v}, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		for i := range svcs.Items {
			svc := &svcs.Items[i]
			if selects(svc, podLabels) && !slices.Contains(out, svc.Name) {
				out = append(out, svc.Name)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// membersOfPod lists the members of every app pod belongs to: the enabled
// front doors of the Services that select it, whose port name pod has.
func (l *lookup) membersOfPod(ctx context.Context, pod *corev1.Pod) ([]member, error) {
	svcs, err := l.selectingServices(ctx, pod)
	if err != nil {
		return nil, err
	}
	var out []member
	for _, svc := range svcs {
		ms, err := l.membersOfService(ctx, pod.Namespace, svc)
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			if hasPortName(pod, m.portName) && !slices.ContainsFunc(out, func(o member) bool { return o.fe.Key == m.fe.Key }) {
				out = append(out, m)
			}
		}
	}
	return out, nil
}

// outcomeFor is the decision for pod: what the webhook injects at its
// creation, and what the rollout compares it with.
func (l *lookup) outcomeFor(ctx context.Context, pod *corev1.Pod) (outcome, []member, error) {
	ms, err := l.membersOfPod(ctx, pod)
	if err != nil {
		return outcome{}, nil, err
	}
	return decide(ms, l.r.image), ms, nil
}

func selects(svc *corev1.Service, podLabels labels.Set) bool {
	if len(svc.Spec.Selector) == 0 {
		return false
	}
	return labels.SelectorFromValidatedSet(svc.Spec.Selector).Matches(podLabels)
}

// hasPortName reports whether a container of pod has a port named name,
// or Gatehouse's sidecar does (it took the name over at injection).
func hasPortName(pod *corev1.Pod, name string) bool {
	if name == "" {
		return false
	}
	containers := pod.Spec.Containers
	if i := slices.IndexFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == SidecarName }); i >= 0 {
		containers = append(slices.Clone(containers), pod.Spec.InitContainers[i])
	}
	for _, c := range containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}
