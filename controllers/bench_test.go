package controllers

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// BenchmarkWebhookDecision measures the webhook's decision and patch for a
// Pod in a namespace with 1,000 Ingresses and Services, reading from an
// in-memory object store as the manager's cache would. It reports the p99
// of single decisions next to the mean.
func BenchmarkWebhookDecision(b *testing.B) {
	const ns, n = "shop", 1000
	var objs []client.Object
	for i := range n {
		name := fmt.Sprintf("app-%04d", i)
		objs = append(objs,
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": name},
				Ports:    []corev1.ServicePort{{Name: "web", Port: 80, TargetPort: intstr.FromString("http")}},
			}},
			&networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: map[string]string{AnnEnabled: "true", AnnAllowedGroups: "team"}},
				Spec: networkingv1.IngressSpec{
					TLS: []networkingv1.IngressTLS{{Hosts: []string{name + ".example.com"}}},
					Rules: []networkingv1.IngressRule{{Host: name + ".example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
						Paths: []networkingv1.HTTPIngressPath{{Path: "/", Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: name, Port: networkingv1.ServiceBackendPort{Name: "web"}}}}},
					}}}},
				}},
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secretName(name), Namespace: ns, Labels: map[string]string{SecretLabelIngress: name}}})
	}
	reader := newMemReader(objs)
	file, err := ParseFile([]byte("providers:\n  - {name: default, issuerURL: 'https://login.example.com', clientID: c, clientSecretRef: {name: s, key: k}, allowedNamespaces: ['*']}\ndefaults: {provider: default}\n"))
	if err != nil {
		b.Fatal(err)
	}
	r := &resolver{reader: reader, apiReader: reader, file: file, namespace: "gatehouse-system", image: "gatehouse:bench"}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Labels: map[string]string{"app": "app-0500"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}}}
	ctx := context.Background()
	var samples []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		out, _, err := newLookup(r).outcomeFor(ctx, pod)
		if err != nil {
			b.Fatal(err)
		}
		if out.kind != verdictInject {
			b.Fatalf("not injected: %+v", out)
		}
		mutated := pod.DeepCopy()
		if !inject(mutated, out.spec, out.portName) {
			b.Fatal("inject changed nothing")
		}
		if len(injectionPatch(pod, mutated)) == 0 {
			b.Fatal("empty patch")
		}
		samples = append(samples, time.Since(start))
	}
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)*99/100].Microseconds())/1000, "p99-ms")
}

// memReader stands in for the manager's informer cache (its index lookups
// are map lookups there; the linear scan of selectors here only makes the
// benchmark pessimistic).
//
// memReader stands in for the manager's informer cache in the benchmark:
// objects in memory, the backend-Service index, and no copies (as the
// webhook asks of the cache with UnsafeDisableDeepCopy).
type memReader struct {
	services  map[string]*corev1.Service
	secrets   map[string]*corev1.Secret
	ingresses []*networkingv1.Ingress
	byBackend map[string][]*networkingv1.Ingress
}

func newMemReader(objs []client.Object) *memReader {
	m := &memReader{services: map[string]*corev1.Service{}, secrets: map[string]*corev1.Secret{}, byBackend: map[string][]*networkingv1.Ingress{}}
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Secret:
			m.secrets[o.Name] = o
		case *corev1.Service:
			m.services[o.Name] = o
		case *networkingv1.Ingress:
			m.ingresses = append(m.ingresses, o)
			for _, name := range backendServiceNames(o) {
				m.byBackend[name] = append(m.byBackend[name], o)
			}
		}
	}
	return m
}

func (m *memReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	switch o := obj.(type) {
	case *corev1.Service:
		if s := m.services[key.Name]; s != nil {
			*o = *s
			return nil
		}
	case *corev1.Secret:
		if s := m.secrets[key.Name]; s != nil {
			*o = *s
			return nil
		}
	}
	return apierrors.NewNotFound(schema.GroupResource{Resource: fmt.Sprintf("%T", obj)}, key.Name)
}

func (m *memReader) List(_ context.Context, list client.ObjectList, opts ...client.ListOption) error {
	o := &client.ListOptions{}
	o.ApplyOptions(opts)
	switch l := list.(type) {
	case *corev1.ServiceList:
		l.Items = l.Items[:0]
		want, _ := o.FieldSelector.RequiresExactMatch(indexServiceSelector)
		for _, s := range m.services {
			if slices.Contains(selectorPairs(s), want) {
				l.Items = append(l.Items, *s)
			}
		}
	case *networkingv1.IngressList:
		l.Items = l.Items[:0]
		want, _ := o.FieldSelector.RequiresExactMatch(indexBackendService)
		for _, ing := range m.byBackend[want] {
			l.Items = append(l.Items, *ing)
		}
	case *corev1.LimitRangeList:
		l.Items = nil
	default:
		return fmt.Errorf("memReader: cannot list %T", list)
	}
	return nil
}
