package controllers_test

import (
	"slices"
	"testing"
	"time"

	"github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

func secretOf(t *testing.T, g gomega.Gomega, ns, ingress string) *corev1.Secret {
	var s corev1.Secret
	g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-" + ingress}, &s)).To(gomega.Succeed())
	return &s
}

func mountedSecret(p *corev1.Pod) string {
	for _, v := range p.Spec.Volumes {
		if v.Name == "gatehouse-secret" && v.Secret != nil {
			return v.Secret.SecretName
		}
	}
	return ""
}

func uids(ps []corev1.Pod) []types.UID {
	var out []types.UID
	for _, p := range ps {
		out = append(out, p.UID)
	}
	slices.Sort(out)
	return out
}

// TestMergedIngresses: an internal and an external Ingress with the same
// settings in front of one Service are merged: the Pods get one
// --redirect-url per host, mount the older Ingress's Secret, and both
// Secrets hold one cookie secret. Pods from before the second Ingress are
// replaced to learn the new host.
func TestMergedIngresses(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	create(t, service(ns, "app", intstr.FromString("http")))
	ann := map[string]string{controllers.AnnEnabled: "true", controllers.AnnAllowedGroups: "team-a"}
	create(t, ingress(ns, "internal", ann, []string{"app.internal.example.com"}, "app"))
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) { secretOf(t, g, ns, "internal") }).WithTimeout(wait).Should(gomega.Succeed())
	create(t, deployment(ns, "app", 2, "http"))
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "app")
		g.Expect(ps).To(gomega.HaveLen(2))
		for _, p := range ps {
			g.Expect(sidecarOf(&p)).NotTo(gomega.BeNil())
		}
	}).WithTimeout(wait).Should(gomega.Succeed())

	create(t, ingress(ns, "external", ann, []string{"app.example.com"}, "app"))
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "app")
		g.Expect(ps).To(gomega.HaveLen(2))
		for _, p := range ps {
			sc := sidecarOf(&p)
			g.Expect(sc).NotTo(gomega.BeNil())
			g.Expect(sc.Args).To(gomega.ContainElements(
				"--redirect-url=https://app.example.com/_gatehouse/callback",
				"--redirect-url=https://app.internal.example.com/_gatehouse/callback",
			))
			g.Expect(mountedSecret(&p)).To(gomega.Equal("gatehouse-internal"))
		}
		internal, external := secretOf(t, g, ns, "internal"), secretOf(t, g, ns, "external")
		g.Expect(external.Data[controllers.SecretKeyCookie]).To(gomega.Equal(internal.Data[controllers.SecretKeyCookie]))
	}).WithTimeout(2 * wait).Should(gomega.Succeed())
	g.Consistently(func(g gomega.Gomega) {
		g.Expect(warnings(t, g, ns, "internal")).NotTo(gomega.ContainElement(gomega.HavePrefix(controllers.ReasonConflict)))
		g.Expect(warnings(t, g, ns, "external")).NotTo(gomega.ContainElement(gomega.HavePrefix(controllers.ReasonConflict)))
	}).WithTimeout(2 * time.Second).Should(gomega.Succeed())
}

// TestConflictKeepsLastGood: a second Ingress with other settings in
// front of a protected app is a conflict, reported on both, and the app's
// new Pods keep the last good sidecar rather than being refused.
func TestConflictKeepsLastGood(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	create(t, service(ns, "app", intstr.FromString("http")))
	create(t, ingress(ns, "one", map[string]string{controllers.AnnEnabled: "true", controllers.AnnAllowedGroups: "a"}, []string{"one.example.com"}, "app"))
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) { secretOf(t, g, ns, "one") }).WithTimeout(wait).Should(gomega.Succeed())
	create(t, ingress(ns, "two", map[string]string{controllers.AnnEnabled: "true", controllers.AnnAllowedGroups: "b"}, []string{"two.example.com"}, "app"))
	g.Eventually(func(g gomega.Gomega) {
		g.Expect(warnings(t, g, ns, "one")).To(gomega.ContainElement(gomega.HavePrefix(controllers.ReasonConflict + ":")))
		g.Expect(warnings(t, g, ns, "two")).To(gomega.ContainElement(gomega.HavePrefix(controllers.ReasonConflict + ":")))
	}).WithTimeout(wait).Should(gomega.Succeed())
	create(t, deployment(ns, "app", 1, "http"))
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "app")
		g.Expect(ps).To(gomega.HaveLen(1))
		sc := sidecarOf(&ps[0])
		g.Expect(sc).NotTo(gomega.BeNil(), "the Pod was not given the last good sidecar")
		g.Expect(sc.Args).To(gomega.ContainElement("--redirect-url=https://one.example.com/_gatehouse/callback"))
		g.Expect(sc.Args).NotTo(gomega.ContainElement("--redirect-url=https://two.example.com/_gatehouse/callback"))
		g.Expect(mountedSecret(&ps[0])).To(gomega.Equal("gatehouse-one"))
	}).WithTimeout(wait).Should(gomega.Succeed())
	// The conflicting Ingress got no Secret, and the first one's policy is
	// what is enforced.
	var s corev1.Secret
	if err := k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-two"}, &s); !apierrors.IsNotFound(err) {
		t.Errorf("the conflicting Ingress got a Secret: %v", err)
	}
	g.Expect(string(secretOf(t, g, ns, "one").Data[controllers.SecretKeyPolicy])).To(gomega.ContainSubstring("- a"))
	st, err := controllers.Status(t.Context(), k8s, ns, "one")
	g.Expect(err).NotTo(gomega.HaveOccurred())
	g.Expect(st).To(gomega.HaveLen(1))
	g.Expect(st[0].Protected).To(gomega.Equal("last-good"))
	g.Expect(st[0].Problem).To(gomega.HavePrefix(controllers.ReasonConflict))
}

// TestDeleteAndRecreate: a GitOps delete-and-recreate of an Ingress keeps
// its Secret while Pods mount it (a restarted container can always mount
// its volume), the recreated Ingress adopts it with the same cookie secret
// (nobody is logged out), and the Pods end up protected again.
func TestDeleteAndRecreate(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	create(t, service(ns, "app", intstr.FromString("http")))
	ing := ingress(ns, "app", map[string]string{controllers.AnnEnabled: "true"}, []string{"app.example.com"}, "app")
	create(t, ing.DeepCopy())
	g := gomega.NewWithT(t)
	var cookie []byte
	g.Eventually(func(g gomega.Gomega) { cookie = secretOf(t, g, ns, "app").Data[controllers.SecretKeyCookie] }).WithTimeout(wait).Should(gomega.Succeed())
	create(t, deployment(ns, "app", 2, "http"))
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "app")
		g.Expect(ps).To(gomega.HaveLen(2))
		for _, p := range ps {
			g.Expect(sidecarOf(&p)).NotTo(gomega.BeNil())
		}
	}).WithTimeout(wait).Should(gomega.Succeed())

	var live networkingv1.Ingress
	g.Expect(k8s.Get(t.Context(), client.ObjectKeyFromObject(ing), &live)).To(gomega.Succeed())
	g.Expect(k8s.Delete(t.Context(), &live)).To(gomega.Succeed())
	// While any Pod mounts it, the Secret stays.
	g.Consistently(func(g gomega.Gomega) {
		var list corev1.PodList
		g.Expect(k8s.List(t.Context(), &list, client.InNamespace(ns))).To(gomega.Succeed())
		mounting := slices.ContainsFunc(list.Items, func(p corev1.Pod) bool { return mountedSecret(&p) == "gatehouse-app" })
		var s corev1.Secret
		err := k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-app"}, &s)
		if mounting {
			g.Expect(err).NotTo(gomega.HaveOccurred(), "the Secret went while a Pod mounts it")
		}
	}).WithTimeout(time.Second).Should(gomega.Succeed())
	create(t, ing.DeepCopy())
	g.Eventually(func(g gomega.Gomega) {
		s := secretOf(t, g, ns, "app")
		g.Expect(s.Data[controllers.SecretKeyCookie]).To(gomega.Equal(cookie), "the recreated Ingress got a new cookie secret")
		g.Expect(s.Annotations).NotTo(gomega.HaveKey(controllers.SecretAnnUnusedSince))
		ps := pods(t, g, ns, "app")
		g.Expect(ps).To(gomega.HaveLen(2))
		for _, p := range ps {
			g.Expect(sidecarOf(&p)).NotTo(gomega.BeNil())
			g.Expect(mountedSecret(&p)).To(gomega.Equal("gatehouse-app"))
		}
	}).WithTimeout(wait).Should(gomega.Succeed())
}

// TestUpgradeRestartsNothing: Pods whose sidecar has an older image and
// other resources, injected by an earlier release with its own hash, are
// reported as stale and not evicted. (That a change to what the sidecar
// enforces does replace Pods is TestMergedIngresses and
// TestExistingPodsReplacedAndRemoval.)
func TestUpgradeRestartsNothing(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	create(t, service(ns, "app", intstr.FromString("http")))
	ing := ingress(ns, "app", map[string]string{controllers.AnnEnabled: "true"}, []string{"app.example.com"}, "app")
	create(t, ing)
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) { secretOf(t, g, ns, "app") }).WithTimeout(wait).Should(gomega.Succeed())

	// What the current controller injects, as a dry run.
	probe := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: ns, Labels: map[string]string{"app": "app"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{appContainer("http")}}}
	g.Eventually(func(g gomega.Gomega) {
		p := probe.DeepCopy()
		g.Expect(k8s.Create(t.Context(), p, client.DryRunAll)).To(gomega.Succeed())
		g.Expect(sidecarOf(p)).NotTo(gomega.BeNil())
		probe = p
	}).WithTimeout(wait).Should(gomega.Succeed())

	// The same sidecar as an earlier release injected it: another image,
	// other resources, another hash format.
	dep := deployment(ns, "app", 2, "http")
	tmpl := &dep.Spec.Template
	tmpl.Spec = *probe.Spec.DeepCopy()
	old := &tmpl.Spec.InitContainers[0]
	old.Image = "gatehouse:old"
	old.Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("24Mi")}}
	tmpl.Annotations = map[string]string{
		controllers.PodAnnIngress:    probe.Annotations[controllers.PodAnnIngress],
		controllers.PodAnnConfigHash: "8c36e8fed4bb7c92",
	}
	create(t, dep)
	var before []types.UID
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "app")
		g.Expect(ps).To(gomega.HaveLen(2))
		before = uids(ps)
		s := secretOf(t, g, ns, "app")
		g.Expect(s.Annotations).To(gomega.HaveKeyWithValue(controllers.SecretAnnStalePods, "2"))
	}).WithTimeout(wait).Should(gomega.Succeed())
	g.Consistently(func(g gomega.Gomega) {
		g.Expect(uids(pods(t, g, ns, "app"))).To(gomega.Equal(before), "a Pod was evicted for a new image")
	}).WithTimeout(3 * time.Second).Should(gomega.Succeed())
	st, err := controllers.Status(t.Context(), k8s, ns, "")
	g.Expect(err).NotTo(gomega.HaveOccurred())
	g.Expect(st).To(gomega.HaveLen(1))
	g.Expect(st[0]).To(gomega.And(
		gomega.HaveField("Protected", "yes"), gomega.HaveField("PodsProtected", 2), gomega.HaveField("PodsTotal", 2), gomega.HaveField("PodsStale", 2)))

}

// TestBlastRadius: with the controller unreachable, the fail-closed
// webhook blocks Pods only in namespaces Gatehouse protects. A webhook
// configuration that copies Gatehouse's current scope (as the controller
// keeps it) but points at a closed port stands for the stopped
// controller; it is narrowed to this test's namespaces.
func TestBlastRadius(t *testing.T) {
	t.Parallel()
	protected := newNamespace(t, nil)
	plain := newNamespace(t, nil)
	labelled := newNamespace(t, map[string]string{controllers.NamespaceInjectionLabel: "enabled"})
	create(t, service(protected, "app", intstr.FromString("http")))
	create(t, ingress(protected, "app", map[string]string{controllers.AnnEnabled: "true"}, []string{"app.example.com"}, "app"))
	g := gomega.NewWithT(t)
	var live admissionv1.MutatingWebhookConfiguration
	g.Eventually(func(g gomega.Gomega) {
		g.Expect(k8s.Get(t.Context(), client.ObjectKey{Name: webhookConfiguration}, &live)).To(gomega.Succeed())
		names := scopeNames(&live)
		g.Expect(names).To(gomega.ContainElements(protected, labelled))
		g.Expect(names).NotTo(gomega.ContainElement(plain))
	}).WithTimeout(wait).Should(gomega.Succeed())

	dead := &admissionv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "dead-" + protected}}
	wh := live.Webhooks[0].DeepCopy()
	wh.ClientConfig = admissionv1.WebhookClientConfig{URL: ptr.To("https://127.0.0.1:1/mutate"), CABundle: wh.ClientConfig.CABundle}
	wh.TimeoutSeconds = ptr.To[int32](2)
	wh.NamespaceSelector.MatchExpressions = append(wh.NamespaceSelector.MatchExpressions, metav1.LabelSelectorRequirement{
		Key: controllers.NamespaceNameLabel, Operator: metav1.LabelSelectorOpIn, Values: []string{protected, plain, labelled},
	})
	dead.Webhooks = []admissionv1.MutatingWebhook{*wh}
	create(t, dead)
	t.Cleanup(func() { _ = k8s.Delete(t.Context(), dead) })

	pod := func(ns, name string, edit func(*corev1.Pod)) error {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "app"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{appContainer("http")}}}
		if edit != nil {
			edit(p)
		}
		return k8s.Create(t.Context(), p, client.DryRunAll)
	}
	// The dead webhook is in force once the protected namespace's Pods
	// fail.
	g.Eventually(func() error { return pod(protected, "app", nil) }).WithTimeout(wait).Should(gomega.MatchError(gomega.ContainSubstring("127.0.0.1:1/mutate")))
	g.Expect(pod(labelled, "app", nil)).To(gomega.MatchError(gomega.ContainSubstring("127.0.0.1:1/mutate")), "a labelled namespace is in scope")
	g.Expect(pod(plain, "app", nil)).To(gomega.Succeed(), "a namespace without Gatehouse was blocked")
	g.Expect(pod(protected, "host", func(p *corev1.Pod) { p.Spec.HostNetwork = true })).To(gomega.Succeed(), "a host-network Pod reached the webhook")
	g.Expect(pod(protected, "unnamed", func(p *corev1.Pod) {
		p.Spec.Containers[0].Ports[0].Name = ""
		p.Spec.Containers[0].ReadinessProbe, p.Spec.Containers[0].LivenessProbe = nil, nil
	})).To(gomega.Succeed(), "a Pod without a named port reached the webhook")
}

func scopeNames(wh *admissionv1.MutatingWebhookConfiguration) []string {
	for _, w := range wh.Webhooks {
		if w.Name != controllers.WebhookName || w.NamespaceSelector == nil {
			continue
		}
		for _, r := range w.NamespaceSelector.MatchExpressions {
			if r.Key == controllers.NamespaceNameLabel && r.Operator == metav1.LabelSelectorOpIn {
				return r.Values
			}
		}
	}
	return nil
}

// TestEvictionRules: a Pod without a controller is reported, never
// evicted; a PodDisruptionBudget that refuses is reported as a blocked
// rollout, and the Pod stays.
func TestEvictionRules(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	create(t, service(ns, "app", intstr.FromString("http")))
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bare", Namespace: ns, Labels: map[string]string{"app": "app"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{appContainer("http")}}}
	create(t, bare)
	create(t, service(ns, "held", intstr.FromString("http")))
	create(t, deployment(ns, "held", 1, "http"))
	create(t, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "held", Namespace: ns}, Spec: policyv1.PodDisruptionBudgetSpec{
		MinAvailable: ptr.To(intstr.FromInt32(1)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "held"}},
	}})
	g := gomega.NewWithT(t)
	var held []types.UID
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "held")
		g.Expect(ps).To(gomega.HaveLen(1))
		if !podReady(&ps[0]) {
			g.Expect(markReady(t, &ps[0])).To(gomega.Succeed())
		}
		var pdb policyv1.PodDisruptionBudget
		g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "held"}, &pdb)).To(gomega.Succeed())
		g.Expect(pdb.Status.CurrentHealthy).To(gomega.Equal(int32(1)))
		held = uids(ps)
	}).WithTimeout(wait).Should(gomega.Succeed())

	create(t, ingress(ns, "app", map[string]string{controllers.AnnEnabled: "true"}, []string{"app.example.com"}, "app"))
	create(t, ingress(ns, "held", map[string]string{controllers.AnnEnabled: "true"}, []string{"held.example.com"}, "held"))
	g.Eventually(func(g gomega.Gomega) {
		g.Expect(warnings(t, g, ns, "app")).To(gomega.ContainElement(gomega.HavePrefix(controllers.ReasonUnmanagedPod + ": Pod(s) bare")))
		g.Expect(warnings(t, g, ns, "held")).To(gomega.ContainElement(gomega.HavePrefix(controllers.ReasonRolloutBlocked + ":")))
	}).WithTimeout(wait).Should(gomega.Succeed())
	g.Consistently(func(g gomega.Gomega) {
		var p corev1.Pod
		g.Expect(k8s.Get(t.Context(), client.ObjectKeyFromObject(bare), &p)).To(gomega.Succeed())
		g.Expect(p.UID).To(gomega.Equal(bare.UID))
		g.Expect(uids(pods(t, g, ns, "held"))).To(gomega.Equal(held))
	}).WithTimeout(3 * time.Second).Should(gomega.Succeed())
	st, err := controllers.Status(t.Context(), k8s, ns, "held")
	g.Expect(err).NotTo(gomega.HaveOccurred())
	g.Expect(st[0].Rollout).To(gomega.ContainSubstring("PodDisruptionBudget"))
}

// TestSidecarResources: resources from the namespace's and the Ingress's
// gatehouse.dev/sidecar-resources, fitted into the namespace's
// LimitRange, so that the API server's LimitRanger admits the Pod; a value
// outside the platform's bounds is refused like any bad annotation.
func TestSidecarResources(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	var n corev1.Namespace
	g := gomega.NewWithT(t)
	g.Expect(k8s.Get(t.Context(), client.ObjectKey{Name: ns}, &n)).To(gomega.Succeed())
	n.Annotations = map[string]string{controllers.AnnSidecarResources: "limits.memory=96Mi"}
	g.Expect(k8s.Update(t.Context(), &n)).To(gomega.Succeed())
	create(t, &corev1.LimitRange{ObjectMeta: metav1.ObjectMeta{Name: "floor", Namespace: ns}, Spec: corev1.LimitRangeSpec{Limits: []corev1.LimitRangeItem{{
		Type: corev1.LimitTypeContainer,
		Min:  corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("20m"), corev1.ResourceMemory: resource.MustParse("48Mi")},
		Max:  corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
	}}}})
	create(t, service(ns, "app", intstr.FromString("http")))
	app := appContainer("http")
	app.Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
	}
	create(t, ingress(ns, "app", map[string]string{controllers.AnnEnabled: "true", controllers.AnnSidecarResources: "requests.memory=40Mi"}, []string{"app.example.com"}, "app"))
	g.Eventually(func(g gomega.Gomega) { secretOf(t, g, ns, "app") }).WithTimeout(wait).Should(gomega.Succeed())
	var sc *corev1.Container
	g.Eventually(func(g gomega.Gomega) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "app-", Namespace: ns, Labels: map[string]string{"app": "app"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{app}}}
		g.Expect(k8s.Create(t.Context(), p, client.DryRunAll)).To(gomega.Succeed())
		sc = sidecarOf(p)
		g.Expect(sc).NotTo(gomega.BeNil())
	}).WithTimeout(wait).Should(gomega.Succeed())
	want := map[string]string{
		"requests.memory": "48Mi", // the Ingress asked 40Mi; the LimitRange's minimum wins
		"limits.memory":   "96Mi", // the namespace's default
		"requests.cpu":    "20m",  // raised to the minimum
		"limits.cpu":      "20m",  // a minimum needs a limit
	}
	got := map[string]string{
		"requests.memory": sc.Resources.Requests.Memory().String(), "limits.memory": sc.Resources.Limits.Memory().String(),
		"requests.cpu": sc.Resources.Requests.Cpu().String(), "limits.cpu": sc.Resources.Limits.Cpu().String(),
	}
	g.Expect(got).To(gomega.Equal(want))

	// Above the platform's bounds (the suite allows at most 512Mi).
	create(t, service(ns, "big", intstr.FromString("http")))
	create(t, ingress(ns, "big", map[string]string{controllers.AnnEnabled: "true", controllers.AnnSidecarResources: "limits.memory=2Gi"}, []string{"big.example.com"}, "big"))
	g.Eventually(func(g gomega.Gomega) {
		g.Expect(warnings(t, g, ns, "big")).To(gomega.ContainElement(gomega.And(
			gomega.HavePrefix(controllers.ReasonInvalidAnnotation+":"), gomega.ContainSubstring("maximum"))))
	}).WithTimeout(wait).Should(gomega.Succeed())
}
