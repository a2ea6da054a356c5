package controllers_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

const wait = 20 * time.Second

// newNamespace makes a namespace for one test.
func newNamespace(t *testing.T, labels map[string]string) string {
	t.Helper()
	name := "t-" + strings.ToLower(rand.Text()[:10])
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := k8s.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	return name
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(t.Context(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

// restrictedContainer is an app container that meets the restricted Pod
// Security Standard, with a named port and probes on it.
func appContainer(portName string) corev1.Container {
	return corev1.Container{
		Name: "app", Image: "shop:1",
		Ports:          []corev1.ContainerPort{{Name: portName, ContainerPort: 8080}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString(portName)}}},
		LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString(portName)}}},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

func deployment(ns, name string, replicas int32, portName string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{appContainer(portName)}},
			},
		},
	}
}

func service(ns, name string, target intstr.IntOrString) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "web", Port: 80, TargetPort: target}},
		},
	}
}

func ingress(ns, name string, ann map[string]string, hosts []string, svc string) *networkingv1.Ingress {
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann}}
	for _, h := range hosts {
		ing.Spec.Rules = append(ing.Spec.Rules, networkingv1.IngressRule{Host: h, IngressRuleValue: networkingv1.IngressRuleValue{
			HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{
				Path: "/", PathType: ptr.To(networkingv1.PathTypePrefix),
				Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: svc, Port: networkingv1.ServiceBackendPort{Name: "web"}}},
			}}},
		}})
	}
	if len(hosts) > 0 {
		ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: hosts, SecretName: "tls"}}
	}
	return ing
}

func pods(t *testing.T, g gomega.Gomega, ns, app string) []corev1.Pod {
	var list corev1.PodList
	g.Expect(k8s.List(t.Context(), &list, client.InNamespace(ns), client.MatchingLabels{"app": app})).To(gomega.Succeed())
	var live []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	return live
}

func sidecarOf(p *corev1.Pod) *corev1.Container {
	for i, c := range p.Spec.InitContainers {
		if c.Name == controllers.SidecarName {
			return &p.Spec.InitContainers[i]
		}
	}
	return nil
}

// markReady sets the Ready condition through the status subresource, as a
// kubelet would.
func markReady(t *testing.T, p *corev1.Pod) error {
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
	return k8s.Status().Update(t.Context(), p)
}

func warnings(t *testing.T, g gomega.Gomega, ns, ingress string) []string {
	var list eventsv1.EventList
	g.Expect(k8s.List(t.Context(), &list, client.InNamespace(ns))).To(gomega.Succeed())
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == ingress && e.Type == corev1.EventTypeWarning {
			out = append(out, e.Reason+": "+e.Note)
		}
	}
	return out
}

func TestAnnotatedIngressProtectsPods(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	create(t, service(ns, "shop", intstr.FromString("http")))
	create(t, service(ns, "other", intstr.FromString("http")))
	create(t, ingress(ns, "shop", map[string]string{controllers.AnnEnabled: "true", controllers.AnnAllowedGroups: "team-a"},
		[]string{"shop.example.com", "www.shop.example.com"}, "shop"))
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		var s corev1.Secret
		g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-shop"}, &s)).To(gomega.Succeed())
		g.Expect(string(s.Data[controllers.SecretKeyClientSecret])).To(gomega.Equal(providerSecret))
		g.Expect(len(s.Data[controllers.SecretKeyCookie])).To(gomega.BeNumerically(">=", 32))
		g.Expect(string(s.Data[controllers.SecretKeyPolicy])).To(gomega.ContainSubstring("team-a"))
		// No owner reference: deleting the Ingress must not take the
		// cookie secret along (a recreated Ingress adopts it).
		g.Expect(s.OwnerReferences).To(gomega.BeEmpty())
		g.Expect(s.Labels).To(gomega.HaveKeyWithValue(controllers.SecretLabelIngress, "shop"))
		g.Expect(string(s.Data[controllers.SecretKeyLastGood])).To(gomega.ContainSubstring("https://www.shop.example.com"))
	}).WithTimeout(wait).Should(gomega.Succeed())

	// "other" is behind an Ingress without the annotation.
	create(t, ingress(ns, "other", nil, []string{"other.example.com"}, "other"))
	create(t, deployment(ns, "shop", 2, "http"))
	create(t, deployment(ns, "other", 1, "http"))
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "shop")
		g.Expect(ps).To(gomega.HaveLen(2))
		for _, p := range ps {
			sc := sidecarOf(&p)
			g.Expect(sc).NotTo(gomega.BeNil(), "pod %s has no sidecar", p.Name)
			g.Expect(*sc.RestartPolicy).To(gomega.Equal(corev1.ContainerRestartPolicyAlways))
			g.Expect(sc.Image).To(gomega.Equal(sidecarImage))
			g.Expect(sc.Args).To(gomega.ContainElements(
				"--redirect-url=https://shop.example.com/_gatehouse/callback",
				"--redirect-url=https://www.shop.example.com/_gatehouse/callback",
				"--upstream=http://127.0.0.1:8080",
				"--config=/etc/gatehouse/policy.yaml",
			))
			g.Expect(sc.Ports[0].Name).To(gomega.Equal("http"))
			app := p.Spec.Containers[0]
			g.Expect(app.Ports[0].Name).To(gomega.BeEmpty())
			g.Expect(app.ReadinessProbe.HTTPGet.Port).To(gomega.Equal(intstr.FromInt32(8080)))
			g.Expect(app.LivenessProbe.TCPSocket.Port).To(gomega.Equal(intstr.FromInt32(8080)))
			g.Expect(slices.ContainsFunc(p.Spec.Volumes, func(v corev1.Volume) bool {
				return v.Secret != nil && v.Secret.SecretName == "gatehouse-shop"
			})).To(gomega.BeTrue())
		}
		others := pods(t, g, ns, "other")
		g.Expect(others).To(gomega.HaveLen(1))
		g.Expect(sidecarOf(&others[0])).To(gomega.BeNil())
	}).WithTimeout(wait).Should(gomega.Succeed())
}

func TestMistakesChangeNothing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		ann    map[string]string
		target intstr.IntOrString
		hosts  []string
		reason string
	}{
		{"bad annotation", map[string]string{controllers.AnnEnabled: "true", controllers.AnnAllowedEmails: "not-an-email"}, intstr.FromString("http"), []string{"a.example.com"}, controllers.ReasonInvalidAnnotation},
		{"typo in a key", map[string]string{controllers.AnnEnabled: "true", "gatehouse.dev/allowed-group": "x"}, intstr.FromString("http"), []string{"a.example.com"}, controllers.ReasonInvalidAnnotation},
		{"unknown provider", map[string]string{controllers.AnnEnabled: "true", controllers.AnnProvider: "nope"}, intstr.FromString("http"), []string{"a.example.com"}, controllers.ReasonUnknownProvider},
		{"provider not allowed here", map[string]string{controllers.AnnEnabled: "true", controllers.AnnProvider: "restricted"}, intstr.FromString("http"), []string{"a.example.com"}, controllers.ReasonUnknownProvider},
		{"numeric targetPort", map[string]string{controllers.AnnEnabled: "true"}, intstr.FromInt32(8080), []string{"a.example.com"}, controllers.ReasonNumericTargetPort},
		{"no host", map[string]string{controllers.AnnEnabled: "true"}, intstr.FromString("http"), nil, controllers.ReasonNoHost},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := newNamespace(t, nil)
			create(t, service(ns, "app", tc.target))
			ing := ingress(ns, "app", tc.ann, tc.hosts, "app")
			if tc.hosts == nil {
				ing.Spec.DefaultBackend = &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "app", Port: networkingv1.ServiceBackendPort{Name: "web"}}}
			}
			create(t, ing)
			g := gomega.NewWithT(t)
			g.Eventually(func(g gomega.Gomega) {
				w := warnings(t, g, ns, "app")
				g.Expect(w).To(gomega.ContainElement(gomega.HavePrefix(tc.reason + ":")))
			}).WithTimeout(wait).Should(gomega.Succeed())
			if tc.reason == controllers.ReasonNumericTargetPort {
				// Gatehouse cannot take the port over: the app's Pods start
				// plain, as before.
				create(t, deployment(ns, "app", 1, "http"))
				g.Eventually(func(g gomega.Gomega) {
					ps := pods(t, g, ns, "app")
					g.Expect(ps).To(gomega.HaveLen(1))
					g.Expect(sidecarOf(&ps[0])).To(gomega.BeNil())
				}).WithTimeout(wait).Should(gomega.Succeed())
				return
			}
			// The Ingress is meant to protect the app and there never were
			// good settings: a new Pod is refused rather than started
			// unprotected, and no Secret is made.
			expectRefused(t, g, ns, "app")
			var s corev1.Secret
			err := k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-app"}, &s)
			if !apierrors.IsNotFound(err) {
				t.Errorf("a Secret was made for a refused Ingress: %v", err)
			}
		})
	}
}

// expectRefused waits until the webhook refuses a new Pod of app (the
// namespace first has to enter the webhook's scope).
func expectRefused(t *testing.T, g gomega.Gomega, ns, app string) {
	t.Helper()
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "late-", Namespace: ns, Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{appContainer("http")}}}
	g.Eventually(func() error {
		p := bare.DeepCopy()
		err := k8s.Create(t.Context(), p)
		if err == nil {
			_ = k8s.Delete(t.Context(), p, client.GracePeriodSeconds(0))
			return fmt.Errorf("Pod admitted")
		}
		if !strings.Contains(err.Error(), "denied") {
			return err
		}
		return nil
	}).WithTimeout(wait).Should(gomega.Succeed(), "a new Pod was admitted unprotected")
}

// TestExistingPodsReplacedAndRemoval: Pods from before the annotation are
// evicted one at a time (the PDB allows one), their replacements carry the
// sidecar; removing the annotation replaces them again without it, drops
// the Secret, and leaves the user's objects as they were.
func TestExistingPodsReplacedAndRemoval(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	dep := deployment(ns, "web", 3, "http")
	create(t, dep)
	svc := service(ns, "web", intstr.FromString("http"))
	create(t, svc)
	create(t, policyPDB{ns: ns}.object())
	g := gomega.NewWithT(t)
	// A kubelet stand-in: every Pod becomes Ready once it exists.
	stop := make(chan struct{})
	defer close(stop)
	var maxMissing atomic.Int32
	var measuring atomic.Bool // set once the Ingress exists
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			measure := measuring.Load() // decided before the List it applies to
			var list corev1.PodList
			if err := k8s.List(t.Context(), &list, client.InNamespace(ns)); err != nil {
				continue
			}
			ready := 0
			for i := range list.Items {
				p := &list.Items[i]
				if p.DeletionTimestamp != nil {
					continue
				}
				if podReady(p) {
					ready++
					continue
				}
				_ = markReady(t, p)
			}
			if missing := int32(3 - ready); measure && missing > maxMissing.Load() {
				maxMissing.Store(missing)
			}
		}
	}()
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "web")
		g.Expect(ps).To(gomega.HaveLen(3))
		for _, p := range ps {
			g.Expect(podReady(&p)).To(gomega.BeTrue())
		}
	}).WithTimeout(wait).Should(gomega.Succeed())
	before := snapshot(t, ns)

	ing := ingress(ns, "web", map[string]string{controllers.AnnEnabled: "true"}, []string{"web.example.com"}, "web")
	measuring.Store(true)
	create(t, ing)
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "web")
		g.Expect(ps).To(gomega.HaveLen(3))
		for _, p := range ps {
			g.Expect(sidecarOf(&p)).NotTo(gomega.BeNil())
		}
	}).WithTimeout(60 * time.Second).Should(gomega.Succeed())
	if m := maxMissing.Load(); m > 1 {
		t.Errorf("%d Pods were down at once during the rollout; the PDB allows 1", m)
	}

	// Remove the annotation.
	g.Expect(k8s.Get(t.Context(), client.ObjectKeyFromObject(ing), ing)).To(gomega.Succeed())
	delete(ing.Annotations, controllers.AnnEnabled)
	g.Expect(k8s.Update(t.Context(), ing)).To(gomega.Succeed())
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "web")
		g.Expect(ps).To(gomega.HaveLen(3))
		for _, p := range ps {
			g.Expect(sidecarOf(&p)).To(gomega.BeNil())
		}
		var s corev1.Secret
		g.Expect(apierrors.IsNotFound(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-web"}, &s))).To(gomega.BeTrue())
	}).WithTimeout(60 * time.Second).Should(gomega.Succeed())
	after := snapshot(t, ns)
	for name, spec := range before {
		if after[name] != spec {
			t.Errorf("%s changed:\nbefore %s\nafter  %s", name, spec, after[name])
		}
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

// snapshot records the user-owned objects as JSON: spec, labels,
// annotations, owner references, finalizers and generation.
func snapshot(t *testing.T, ns string) map[string]string {
	t.Helper()
	out := map[string]string{}
	var deps appsv1.DeploymentList
	var svcs corev1.ServiceList
	if err := k8s.List(t.Context(), &deps, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if err := k8s.List(t.Context(), &svcs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	record := func(kind string, meta metav1.ObjectMeta, spec any) {
		b, _ := json.Marshal(map[string]any{
			"spec": spec, "labels": meta.Labels, "annotations": meta.Annotations,
			"owners": meta.OwnerReferences, "finalizers": meta.Finalizers, "generation": meta.Generation,
		})
		out[kind+"/"+meta.Name] = string(b)
	}
	for _, d := range deps.Items {
		record("deployment", d.ObjectMeta, d.Spec)
	}
	for _, s := range svcs.Items {
		record("service", s.ObjectMeta, s.Spec)
	}
	return out
}

func TestWebhookScope(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, map[string]string{controllers.NamespaceInjectionLabel: "disabled"})
	create(t, service(ns, "app", intstr.FromString("http")))
	create(t, ingress(ns, "app", map[string]string{controllers.AnnEnabled: "true"}, []string{"a.example.com"}, "app"))
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bare", Namespace: ns, Labels: map[string]string{"app": "app"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{appContainer("http")}}}
	create(t, pod)
	if sidecarOf(pod) != nil {
		t.Error("the webhook injected into an opted-out namespace")
	}
	// A bare Pod in a normal namespace is protected like any other.
	ns2 := newNamespace(t, nil)
	create(t, service(ns2, "app", intstr.FromString("http")))
	create(t, ingress(ns2, "app", map[string]string{controllers.AnnEnabled: "true"}, []string{"a.example.com"}, "app"))
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bare", Namespace: ns2, Labels: map[string]string{"app": "app"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{appContainer("http")}}}
	g := gomega.NewWithT(t)
	g.Eventually(func() error {
		p := bare.DeepCopy()
		if err := k8s.Create(t.Context(), p); err != nil {
			return err
		}
		if sidecarOf(p) == nil {
			_ = k8s.Delete(t.Context(), p, client.GracePeriodSeconds(0))
			return fmt.Errorf("no sidecar yet")
		}
		return nil
	}).WithTimeout(wait).Should(gomega.Succeed())
}

// TestWebhookScopeFromConfiguration: a namespace that the webhook
// configuration's namespaceSelector leaves out (an exclusion only the
// configuration knows) gets an UnprotectedPods Warning, and its Pods are
// neither injected nor evicted for a sidecar they can never get.
func TestWebhookScopeFromConfiguration(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, map[string]string{extraScopeLabel: "outside"})
	create(t, service(ns, "app", intstr.FromString("http")))
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bare", Namespace: ns, Labels: map[string]string{"app": "app"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{appContainer("http")}}}
	create(t, pod)
	create(t, ingress(ns, "app", map[string]string{controllers.AnnEnabled: "true"}, []string{"a.example.com"}, "app"))
	g := gomega.NewWithT(t)
	g.Eventually(func() []string { return warnings(t, g, ns, "app") }).WithTimeout(wait).
		Should(gomega.ContainElement(gomega.HavePrefix(controllers.ReasonUnprotectedPods + ": namespace " + ns + " is outside the webhook's scope")))
	g.Consistently(func() []corev1.Pod { return pods(t, g, ns, "app") }).WithTimeout(3*time.Second).
		Should(gomega.ConsistOf(gomega.HaveField("UID", pod.UID)), "the Pod was evicted")
	again := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "again", Namespace: ns, Labels: map[string]string{"app": "app"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{appContainer("http")}}}
	create(t, again)
	if sidecarOf(again) != nil {
		t.Error("the webhook injected into a namespace its configuration leaves out")
	}
}

type policyPDB struct{ ns string }

// TestBackendsHostsAndWorkloads: several hosts, several backends, the
// default backend and StatefulSet Pods are all covered.
func TestBackendsHostsAndWorkloads(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	for _, name := range []string{"front", "api", "fallback", "db"} {
		create(t, service(ns, name, intstr.FromString("http")))
	}
	ing := ingress(ns, "site", map[string]string{controllers.AnnEnabled: "true"}, []string{"a.example.com", "b.example.com"}, "front")
	ing.Spec.Rules[1].HTTP.Paths[0].Backend.Service.Name = "api"
	ing.Spec.DefaultBackend = &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "fallback", Port: networkingv1.ServiceBackendPort{Number: 80}}}
	ing.Spec.Rules = append(ing.Spec.Rules, networkingv1.IngressRule{Host: "db.example.com", IngressRuleValue: networkingv1.IngressRuleValue{
		HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{
			Path: "/", PathType: ptr.To(networkingv1.PathTypePrefix),
			Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "db", Port: networkingv1.ServiceBackendPort{Name: "web"}}},
		}}},
	}})
	create(t, ing)
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		var s corev1.Secret
		g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-site"}, &s)).To(gomega.Succeed())
	}).WithTimeout(wait).Should(gomega.Succeed())
	for _, name := range []string{"front", "api", "fallback"} {
		create(t, deployment(ns, name, 1, "http"))
	}
	labels := map[string]string{"app": "db"}
	create(t, &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To[int32](1), ServiceName: "db",
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{appContainer("http")}}},
		},
	})
	g.Eventually(func(g gomega.Gomega) {
		for _, name := range []string{"front", "api", "fallback", "db"} {
			ps := pods(t, g, ns, name)
			g.Expect(ps).To(gomega.HaveLen(1), name)
			sc := sidecarOf(&ps[0])
			g.Expect(sc).NotTo(gomega.BeNil(), "%s has no sidecar", name)
			// TLS per host: a and b are under spec.tls, db is not.
			g.Expect(sc.Args).To(gomega.ContainElements(
				"--redirect-url=https://a.example.com/_gatehouse/callback",
				"--redirect-url=https://b.example.com/_gatehouse/callback",
				"--redirect-url=http://db.example.com/_gatehouse/callback",
				"--cookie-secure=false",
			))
		}
		// db.example.com has no TLS entry: reported, not refused.
		g.Expect(warnings(t, g, ns, "site")).To(gomega.ContainElement(gomega.HavePrefix(controllers.ReasonInsecureHost + ":")))
	}).WithTimeout(wait).Should(gomega.Succeed())
}

// expectNoSidecar checks for a few seconds that no Pod of app has the
// sidecar.
func expectNoSidecar(t *testing.T, g gomega.Gomega, ns, app string) {
	t.Helper()
	g.Consistently(func(g gomega.Gomega) {
		for _, p := range pods(t, g, ns, app) {
			g.Expect(sidecarOf(&p)).To(gomega.BeNil())
		}
	}).WithTimeout(3 * time.Second).Should(gomega.Succeed())
}

// TestProviderSecretAndRotation: a team's own IdP client from a Secret in
// its namespace; asking for a new cookie secret keeps the previous one as
// the second line.
func TestProviderSecretAndRotation(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "team-idp", Namespace: ns}, Data: map[string][]byte{
		"issuer-url": []byte("https://idp.team.example.com"), "client-id": []byte("team-app"), "client-secret": []byte("team-secret"),
	}})
	create(t, service(ns, "app", intstr.FromString("http")))
	create(t, ingress(ns, "app", map[string]string{controllers.AnnEnabled: "true", controllers.AnnProviderSecret: "team-idp"}, []string{"app.example.com"}, "app"))
	g := gomega.NewWithT(t)
	var first string
	g.Eventually(func(g gomega.Gomega) {
		var s corev1.Secret
		g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-app"}, &s)).To(gomega.Succeed())
		g.Expect(string(s.Data[controllers.SecretKeyClientSecret])).To(gomega.Equal("team-secret"))
		first = string(s.Data[controllers.SecretKeyCookie])
	}).WithTimeout(wait).Should(gomega.Succeed())
	create(t, deployment(ns, "app", 1, "http"))
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "app")
		g.Expect(ps).To(gomega.HaveLen(1))
		sc := sidecarOf(&ps[0])
		g.Expect(sc).NotTo(gomega.BeNil())
		g.Expect(sc.Args).To(gomega.ContainElements("--issuer-url=https://idp.team.example.com", "--client-id=team-app"))
	}).WithTimeout(wait).Should(gomega.Succeed())

	var s corev1.Secret
	g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-app"}, &s)).To(gomega.Succeed())
	patched := s.DeepCopy()
	if patched.Annotations == nil {
		patched.Annotations = map[string]string{}
	}
	patched.Annotations[controllers.SecretAnnRotate] = "now"
	g.Expect(k8s.Patch(t.Context(), patched, client.MergeFrom(&s))).To(gomega.Succeed())
	g.Eventually(func(g gomega.Gomega) {
		var s corev1.Secret
		g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-app"}, &s)).To(gomega.Succeed())
		lines := strings.Split(string(s.Data[controllers.SecretKeyCookie]), "\n")
		g.Expect(lines).To(gomega.HaveLen(2))
		g.Expect(lines[1]).To(gomega.Equal(first))
		g.Expect(lines[0]).NotTo(gomega.Equal(first))
		g.Expect(s.Annotations).NotTo(gomega.HaveKey(controllers.SecretAnnRotate))
	}).WithTimeout(wait).Should(gomega.Succeed())
}

// TestIngressDeletion: deleting the Ingress garbage-collects its Secret
// through the owner reference, and Pods created afterwards are plain.
func TestIngressDeletion(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	create(t, service(ns, "app", intstr.FromString("http")))
	ing := ingress(ns, "app", map[string]string{controllers.AnnEnabled: "true"}, []string{"app.example.com"}, "app")
	create(t, ing)
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		var s corev1.Secret
		g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-app"}, &s)).To(gomega.Succeed())
	}).WithTimeout(wait).Should(gomega.Succeed())
	g.Expect(k8s.Delete(t.Context(), ing)).To(gomega.Succeed())
	g.Eventually(func(g gomega.Gomega) {
		var s corev1.Secret
		err := k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-app"}, &s)
		g.Expect(apierrors.IsNotFound(err)).To(gomega.BeTrue(), "Secret still there: %v", err)
	}).WithTimeout(wait).Should(gomega.Succeed())
	// The Deployment's Pod is admitted, without the sidecar.
	create(t, deployment(ns, "app", 1, "http"))
	g.Eventually(func(g gomega.Gomega) []corev1.Pod { return pods(t, g, ns, "app") }).WithTimeout(wait).ShouldNot(gomega.BeEmpty())
	expectNoSidecar(t, g, ns, "app")
}

// TestTypoKeepsProtection: once an Ingress protects an app, a bad edit of
// its annotations changes nothing: the Secret stays, running Pods keep the
// sidecar, and a new Pod gets the last good one.
func TestTypoKeepsProtection(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	create(t, service(ns, "app", intstr.FromString("http")))
	ing := ingress(ns, "app", map[string]string{controllers.AnnEnabled: "true"}, []string{"app.example.com"}, "app")
	create(t, ing)
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		var s corev1.Secret
		g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-app"}, &s)).To(gomega.Succeed())
	}).WithTimeout(wait).Should(gomega.Succeed())
	create(t, deployment(ns, "app", 1, "http"))
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "app")
		g.Expect(ps).To(gomega.HaveLen(1))
		g.Expect(sidecarOf(&ps[0])).NotTo(gomega.BeNil())
	}).WithTimeout(wait).Should(gomega.Succeed())

	g.Expect(k8s.Get(t.Context(), client.ObjectKeyFromObject(ing), ing)).To(gomega.Succeed())
	ing.Annotations[controllers.AnnEnabled] = "yes" // not a boolean
	g.Expect(k8s.Update(t.Context(), ing)).To(gomega.Succeed())
	g.Eventually(func(g gomega.Gomega) {
		g.Expect(warnings(t, g, ns, "app")).To(gomega.ContainElement(gomega.HavePrefix(controllers.ReasonInvalidAnnotation + ":")))
	}).WithTimeout(wait).Should(gomega.Succeed())
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: ns, Labels: map[string]string{"app": "app"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{appContainer("http")}}}
	create(t, bare)
	if sc := sidecarOf(bare); sc == nil || !slices.Contains(sc.Args, "--redirect-url=https://app.example.com/_gatehouse/callback") {
		t.Errorf("a new Pod did not get the last good sidecar: %+v", sc)
	}
	var s corev1.Secret
	g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-app"}, &s)).To(gomega.Succeed())
	for _, p := range pods(t, g, ns, "app") {
		g.Expect(sidecarOf(&p)).NotTo(gomega.BeNil(), "Pod %s has no sidecar", p.Name)
	}
}

// TestUserSecretLeftAlone: a user's own Secret with the name Gatehouse
// would use is not taken over.
func TestUserSecretLeftAlone(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-app", Namespace: ns}, Data: map[string][]byte{"mine": []byte("x")}})
	create(t, service(ns, "app", intstr.FromString("http")))
	create(t, ingress(ns, "app", map[string]string{controllers.AnnEnabled: "true"}, []string{"app.example.com"}, "app"))
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		g.Expect(warnings(t, g, ns, "app")).To(gomega.ContainElement(gomega.HavePrefix(controllers.ReasonSecretError + ":")))
	}).WithTimeout(wait).Should(gomega.Succeed())
	var s corev1.Secret
	g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-app"}, &s)).To(gomega.Succeed())
	if len(s.Data) != 1 || len(s.OwnerReferences) != 0 || len(s.Labels) != 0 {
		t.Errorf("the user's Secret was changed: %+v", s.ObjectMeta)
	}
}

// TestDaemonSetPods: DaemonSet Pods (created by the DaemonSet controller
// for a Node) get the sidecar like any other.
func TestDaemonSetPods(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-" + ns, Labels: map[string]string{"test-node": ns}}}
	create(t, node)
	t.Cleanup(func() { _ = k8s.Delete(context.WithoutCancel(t.Context()), node) })
	// The API server taints a new Node not-ready; no kubelet will clear it.
	if err := k8s.Get(t.Context(), client.ObjectKeyFromObject(node), node); err != nil {
		t.Fatal(err)
	}
	node.Spec.Taints = nil
	if err := k8s.Update(t.Context(), node); err != nil {
		t.Fatal(err)
	}
	create(t, service(ns, "agent", intstr.FromString("http")))
	create(t, ingress(ns, "agent", map[string]string{controllers.AnnEnabled: "true"}, []string{"agent.example.com"}, "agent"))
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		var s corev1.Secret
		g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-agent"}, &s)).To(gomega.Succeed())
	}).WithTimeout(wait).Should(gomega.Succeed())
	labels := map[string]string{"app": "agent"}
	create(t, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: ns},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				NodeSelector: map[string]string{"test-node": ns},
				Containers:   []corev1.Container{appContainer("http")},
			}},
		},
	})
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "agent")
		g.Expect(ps).To(gomega.HaveLen(1))
		g.Expect(sidecarOf(&ps[0])).NotTo(gomega.BeNil())
	}).WithTimeout(wait).Should(gomega.Succeed())
}
