package controllers_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

// registryEntry reads namespace ns's entry of the broker registry.
func registryEntry(t *testing.T, g gomega.Gomega, ns string) (controllers.BrokerRedirects, bool) {
	var cm corev1.ConfigMap
	g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: managerNS, Name: controllers.DefaultBrokerRegistry}, &cm)).To(gomega.Succeed())
	raw, ok := cm.Data[ns]
	if !ok {
		return nil, false
	}
	r, err := controllers.ParseBrokerRedirects(raw)
	g.Expect(err).NotTo(gomega.HaveOccurred())
	return r, true
}

// TestBrokeredProvider: a provider in broker mode puts no client secret in
// the namespace. Its Pods get the broker's URL and CA, and a projected
// token of the broker's audience. The registry lists the namespace's
// callback URLs for as long as its Secret lives.
func TestBrokeredProvider(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	create(t, service(ns, "shop", intstr.FromString("http")))
	create(t, ingress(ns, "shop", map[string]string{controllers.AnnEnabled: "true", controllers.AnnProvider: "brokered"},
		[]string{"shop.example.com", "www.shop.example.com"}, "shop"))
	create(t, deployment(ns, "shop", 1, "http"))
	g := gomega.NewWithT(t)
	var ca []byte
	g.Eventually(func(g gomega.Gomega) {
		var tlsSecret corev1.Secret
		g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: managerNS, Name: brokerTLS}, &tlsSecret)).To(gomega.Succeed())
		ca = tlsSecret.Data["ca.crt"]
		s := secretOf(t, g, ns, "shop")
		g.Expect(s.Data).NotTo(gomega.HaveKey(controllers.SecretKeyClientSecret))
		g.Expect(string(s.Data[controllers.SecretKeyBrokerCA])).To(gomega.Equal(string(ca)))
		for _, v := range s.Data {
			g.Expect(string(v)).NotTo(gomega.ContainSubstring(providerSecret))
		}
	}).WithTimeout(wait).Should(gomega.Succeed())

	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "shop")
		g.Expect(ps).To(gomega.HaveLen(1))
		sc := sidecarOf(&ps[0])
		g.Expect(sc).NotTo(gomega.BeNil())
		g.Expect(sc.Args).To(gomega.ContainElements(
			"--broker-url="+brokerURL+"/v1/providers/brokered",
			"--broker-ca-file=/etc/gatehouse/"+controllers.SecretKeyBrokerCA,
			"--client-id=brokered",
		))
		g.Expect(slices.ContainsFunc(sc.Args, func(a string) bool { return strings.HasPrefix(a, "--client-secret-file") })).To(gomega.BeFalse(), "args %v", sc.Args)
		g.Expect(sc.VolumeMounts).To(gomega.ContainElement(corev1.VolumeMount{
			Name: controllers.BrokerTokenVolumeName, MountPath: controllers.BrokerTokenMountPath, ReadOnly: true,
		}))
		i := slices.IndexFunc(ps[0].Spec.Volumes, func(v corev1.Volume) bool { return v.Name == controllers.BrokerTokenVolumeName })
		g.Expect(i).To(gomega.BeNumerically(">=", 0))
		src := ps[0].Spec.Volumes[i].Projected.Sources[0].ServiceAccountToken
		g.Expect(src.Audience).To(gomega.Equal(controllers.DefaultBrokerAudience))
		g.Expect(*src.ExpirationSeconds).To(gomega.BeEquivalentTo(controllers.BrokerTokenSeconds))
		g.Expect(src.Path).To(gomega.Equal("token"))
	}).WithTimeout(wait).Should(gomega.Succeed())

	g.Eventually(func(g gomega.Gomega) {
		r, ok := registryEntry(t, g, ns)
		g.Expect(ok).To(gomega.BeTrue(), "namespace %s not in the registry", ns)
		g.Expect(r).To(gomega.Equal(controllers.BrokerRedirects{"brokered": {
			"https://shop.example.com/_gatehouse/callback", "https://www.shop.example.com/_gatehouse/callback",
		}}))
	}).WithTimeout(wait).Should(gomega.Succeed())

	// The same app with a copy-mode provider keeps its hosts out of the
	// registry: only brokered front doors may have codes exchanged.
	other := newNamespace(t, nil)
	create(t, service(other, "blog", intstr.FromString("http")))
	create(t, ingress(other, "blog", map[string]string{controllers.AnnEnabled: "true"}, []string{"blog.example.com"}, "blog"))
	g.Eventually(func(g gomega.Gomega) {
		s := secretOf(t, g, other, "blog")
		g.Expect(string(s.Data[controllers.SecretKeyClientSecret])).To(gomega.Equal(providerSecret))
		g.Expect(s.Data).NotTo(gomega.HaveKey(controllers.SecretKeyBrokerCA))
		_, ok := registryEntry(t, g, other)
		g.Expect(ok).To(gomega.BeFalse())
	}).WithTimeout(wait).Should(gomega.Succeed())

	// The Ingress and its app go: once the Secret is collected, so is the
	// namespace's registry entry.
	g.Expect(k8s.Delete(t.Context(), ingress(ns, "shop", nil, nil, "shop"))).To(gomega.Succeed())
	g.Expect(k8s.Delete(t.Context(), deployment(ns, "shop", 1, "http"))).To(gomega.Succeed())
	g.Expect(k8s.DeleteAllOf(t.Context(), &corev1.Pod{}, client.InNamespace(ns))).To(gomega.Succeed())
	g.Eventually(func(g gomega.Gomega) {
		_, ok := registryEntry(t, g, ns)
		g.Expect(ok).To(gomega.BeFalse())
	}).WithTimeout(wait).Should(gomega.Succeed())
}

// TestKeyedProvider: a provider that authenticates with a private key
// (clientKeyRef, no client secret) is brokered like one with a secret: its
// Pods get the broker's URL and CA, and the key reaches no namespace.
func TestKeyedProvider(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	create(t, service(ns, "shop", intstr.FromString("http")))
	create(t, ingress(ns, "shop", map[string]string{controllers.AnnEnabled: "true", controllers.AnnProvider: "keyed"},
		[]string{"keyed.example.com"}, "shop"))
	create(t, deployment(ns, "shop", 1, "http"))
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		s := secretOf(t, g, ns, "shop")
		g.Expect(s.Data).To(gomega.HaveKey(controllers.SecretKeyBrokerCA))
		g.Expect(s.Data).NotTo(gomega.HaveKey(controllers.SecretKeyClientSecret))
		r, ok := registryEntry(t, g, ns)
		g.Expect(ok).To(gomega.BeTrue())
		g.Expect(r).To(gomega.Equal(controllers.BrokerRedirects{"keyed": {"https://keyed.example.com/_gatehouse/callback"}}))
		ps := pods(t, g, ns, "shop")
		g.Expect(ps).To(gomega.HaveLen(1))
		sc := sidecarOf(&ps[0])
		g.Expect(sc).NotTo(gomega.BeNil())
		g.Expect(sc.Args).To(gomega.ContainElements("--broker-url="+brokerURL+"/v1/providers/keyed", "--client-id=keyed"))
		g.Expect(slices.ContainsFunc(sc.Args, func(a string) bool { return strings.HasPrefix(a, "--client-secret-file") })).To(gomega.BeFalse(), "args %v", sc.Args)
	}).WithTimeout(wait).Should(gomega.Succeed())

	var secrets corev1.SecretList
	g.Expect(k8s.List(t.Context(), &secrets, client.InNamespace(ns))).To(gomega.Succeed())
	for _, s := range secrets.Items {
		for k, v := range s.Data {
			g.Expect(string(v)).NotTo(gomega.ContainSubstring("only-the-broker-reads-this"), "Secret %s key %s", s.Name, k)
		}
	}
}

// TestBrokerCARotated: a new CA in the broker's certificate Secret reaches
// the Secrets of brokered front doors without a resync.
func TestBrokerCARotated(t *testing.T) {
	ns := newNamespace(t, nil)
	create(t, service(ns, "shop", intstr.FromString("http")))
	create(t, ingress(ns, "shop", map[string]string{controllers.AnnEnabled: "true", controllers.AnnProvider: "brokered"},
		[]string{"ca-" + ns + ".example.com"}, "shop"))
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		g.Expect(secretOf(t, g, ns, "shop").Data).To(gomega.HaveKey(controllers.SecretKeyBrokerCA))
	}).WithTimeout(wait).Should(gomega.Succeed())
	var tlsSecret corev1.Secret
	g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: managerNS, Name: brokerTLS}, &tlsSecret)).To(gomega.Succeed())
	rotated := append([]byte("rotated "), tlsSecret.Data["ca.crt"]...)
	tlsSecret.Data["ca.crt"] = rotated
	g.Expect(k8s.Update(t.Context(), &tlsSecret)).To(gomega.Succeed())
	g.Eventually(func(g gomega.Gomega) {
		s := secretOf(t, g, ns, "shop")
		g.Expect(string(s.Data[controllers.SecretKeyBrokerCA])).To(gomega.Equal(string(rotated)))
		var last map[string]any
		g.Expect(json.Unmarshal(s.Data[controllers.SecretKeyLastGood], &last)).To(gomega.Succeed())
		g.Expect(last).To(gomega.HaveKeyWithValue("Provider", "brokered"))
	}).WithTimeout(wait).Should(gomega.Succeed())
}

// TestRegistryTrustsOnlyGatehouse: a tenant's own Secret with Gatehouse's
// label and a last good spec naming another team's host does not reach
// the registry, nor does a host another namespace claimed first.
func TestRegistryTrustsOnlyGatehouse(t *testing.T) {
	t.Parallel()
	g := gomega.NewWithT(t)
	victim := newNamespace(t, nil)
	create(t, service(victim, "shop", intstr.FromString("http")))
	create(t, ingress(victim, "shop", map[string]string{controllers.AnnEnabled: "true", controllers.AnnProvider: "brokered"},
		[]string{"victim-" + victim + ".example.com"}, "shop"))
	g.Eventually(func(g gomega.Gomega) {
		_, ok := registryEntry(t, g, victim)
		g.Expect(ok).To(gomega.BeTrue())
	}).WithTimeout(wait).Should(gomega.Succeed())

	thief := newNamespace(t, nil)
	forged, _ := json.Marshal(map[string]any{
		"Ingress": "forged", "Provider": "brokered", "BrokerURL": brokerURL + "/v1/providers/brokered",
		"Origins": []string{"https://stolen-" + thief + ".example.com"}, "PathPrefix": "/_gatehouse",
	})
	create(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-forged", Namespace: thief, Labels: map[string]string{controllers.SecretLabelIngress: "forged"},
			Annotations: map[string]string{controllers.SecretAnnRegistryMAC: strings.Repeat("0", 64)}},
		Data: map[string][]byte{controllers.SecretKeyLastGood: forged},
	})
	// The thief's own Ingress names the victim's host next to its own.
	create(t, service(thief, "app", intstr.FromString("http")))
	create(t, ingress(thief, "app", map[string]string{controllers.AnnEnabled: "true", controllers.AnnProvider: "brokered"},
		[]string{"victim-" + victim + ".example.com", "thief-" + thief + ".example.com"}, "app"))
	// The registry is rebuilt from every Secret at once: once the thief's
	// Ingress is in it, the forged Secret has been looked at too.
	g.Eventually(func(g gomega.Gomega) {
		r, ok := registryEntry(t, g, thief)
		g.Expect(ok).To(gomega.BeTrue())
		g.Expect(r).To(gomega.Equal(controllers.BrokerRedirects{"brokered": {"https://thief-" + thief + ".example.com/_gatehouse/callback"}}))
	}).WithTimeout(wait).Should(gomega.Succeed())
	r, _ := registryEntry(t, g, victim)
	g.Expect(r).To(gomega.Equal(controllers.BrokerRedirects{"brokered": {"https://victim-" + victim + ".example.com/_gatehouse/callback"}}))
}

// TestSwitchToBrokerKeepsCopyForOldPods: when an app moves to a provider in
// broker mode, the copied client secret stays in its Secret while a Pod
// whose sidecar reads it runs (here, with rollout: manual set at the
// switch, until it is deleted), so that its sidecar still starts if it
// restarts.
func TestSwitchToBrokerKeepsCopyForOldPods(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	create(t, service(ns, "shop", intstr.FromString("http")))
	ann := map[string]string{controllers.AnnEnabled: "true"}
	create(t, ingress(ns, "shop", ann, []string{"switch-" + ns + ".example.com"}, "shop"))
	create(t, deployment(ns, "shop", 1, "http"))
	g := gomega.NewWithT(t)
	var old corev1.Pod
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "shop")
		g.Expect(ps).To(gomega.HaveLen(1))
		g.Expect(sidecarOf(&ps[0])).NotTo(gomega.BeNil())
		g.Expect(sidecarOf(&ps[0]).Args).To(gomega.ContainElement("--client-secret-file=/etc/gatehouse/" + controllers.SecretKeyClientSecret))
		old = ps[0]
	}).WithTimeout(wait).Should(gomega.Succeed())

	var ing networkingv1.Ingress
	g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "shop"}, &ing)).To(gomega.Succeed())
	// The switch, with rollout: manual so that the old Pod stays.
	ing.Annotations[controllers.AnnProvider] = "brokered"
	ing.Annotations[controllers.AnnRollout] = "manual"
	g.Expect(k8s.Update(t.Context(), &ing)).To(gomega.Succeed())
	g.Eventually(func(g gomega.Gomega) {
		s := secretOf(t, g, ns, "shop")
		g.Expect(s.Data).To(gomega.HaveKey(controllers.SecretKeyBrokerCA))
		g.Expect(string(s.Data[controllers.SecretKeyClientSecret])).To(gomega.Equal(providerSecret))
	}).WithTimeout(wait).Should(gomega.Succeed())

	// The old Pod goes; its replacement is brokered, and the copy goes.
	g.Expect(k8s.Delete(t.Context(), &old)).To(gomega.Succeed())
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "shop")
		g.Expect(ps).To(gomega.HaveLen(1))
		g.Expect(sidecarOf(&ps[0]).Args).To(gomega.ContainElement(gomega.HavePrefix("--broker-url=")))
		g.Expect(secretOf(t, g, ns, "shop").Data).NotTo(gomega.HaveKey(controllers.SecretKeyClientSecret))
	}).WithTimeout(wait).Should(gomega.Succeed())
}
