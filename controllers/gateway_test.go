package controllers_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

// gateway is a Gateway with one listener per hostname: HTTPS when tls.
func gateway(ns, name string, tls bool, hostnames ...string) *gatewayv1.Gateway {
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: gatewayv1.GatewaySpec{GatewayClassName: "example"}}
	for i, h := range hostnames {
		l := gatewayv1.Listener{Name: gatewayv1.SectionName("l" + string(rune('a'+i))), Hostname: ptr.To(gatewayv1.Hostname(h)), Port: 80, Protocol: gatewayv1.HTTPProtocolType}
		if tls {
			l.Port, l.Protocol = 443, gatewayv1.HTTPSProtocolType
			l.TLS = &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "tls"}}}
		}
		gw.Spec.Listeners = append(gw.Spec.Listeners, l)
	}
	return gw
}

// httpRoute is an HTTPRoute attached to Gateway gw of its namespace, with
// one rule to Service svc (of namespace svcNS when set) on port 80.
func httpRoute(ns, name string, ann map[string]string, gw string, hostnames []string, svc, svcNS string) *gatewayv1.HTTPRoute {
	ref := gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{
		Name: gatewayv1.ObjectName(svc), Port: ptr.To[gatewayv1.PortNumber](80),
	}}}
	if svcNS != "" {
		ref.Namespace = ptr.To(gatewayv1.Namespace(svcNS))
	}
	route := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann}, Spec: gatewayv1.HTTPRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: gatewayv1.ObjectName(gw)}}},
		Rules:           []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{ref}}},
	}}
	for _, h := range hostnames {
		route.Spec.Hostnames = append(route.Spec.Hostnames, gatewayv1.Hostname(h))
	}
	return route
}

func routeWarnings(t *testing.T, g gomega.Gomega, ns, route string) []string {
	var list eventsv1.EventList
	g.Expect(k8s.List(t.Context(), &list, client.InNamespace(ns))).To(gomega.Succeed())
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Kind == "HTTPRoute" && e.Regarding.Name == route && e.Type == corev1.EventTypeWarning {
			out = append(out, e.Reason+": "+e.Note)
		}
	}
	return out
}

// TestHTTPRouteProtectsPods: an annotated HTTPRoute without hostnames
// takes its host and scheme from the Gateway listener it attaches to.
func TestHTTPRouteProtectsPods(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	create(t, gateway(ns, "public", true, "shop.example.com"))
	create(t, service(ns, "shop", intstr.FromString("http")))
	create(t, httpRoute(ns, "shop", map[string]string{controllers.AnnEnabled: "true", controllers.AnnAllowedGroups: "team-a"}, "public", nil, "shop", ""))
	create(t, deployment(ns, "shop", 2, "http"))
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "shop")
		g.Expect(ps).To(gomega.HaveLen(2))
		for _, p := range ps {
			sc := sidecarOf(&p)
			g.Expect(sc).NotTo(gomega.BeNil())
			g.Expect(sc.Args).To(gomega.ContainElement("--redirect-url=https://shop.example.com/_gatehouse/callback"))
			g.Expect(sc.Args).NotTo(gomega.ContainElement("--cookie-secure=false"))
			g.Expect(mountedSecret(&p)).To(gomega.Equal("gatehouse-httproute." + ns + ".shop"))
		}
		var s corev1.Secret
		g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-httproute." + ns + ".shop"}, &s)).To(gomega.Succeed())
		g.Expect(s.Annotations).To(gomega.HaveKeyWithValue(controllers.SecretAnnHTTPRoute, ns+"/shop"))
		g.Expect(string(s.Data[controllers.SecretKeyPolicy])).To(gomega.ContainSubstring("team-a"))
	}).WithTimeout(2 * wait).Should(gomega.Succeed())
	st, err := controllers.Status(t.Context(), k8s, ns, "shop")
	g.Expect(err).NotTo(gomega.HaveOccurred())
	g.Expect(st).To(gomega.ConsistOf(gomega.And(
		gomega.HaveField("Kind", "HTTPRoute"), gomega.HaveField("Protected", "yes"),
		gomega.HaveField("Hosts", []string{"https://shop.example.com"}), gomega.HaveField("PodsProtected", 2))))
}

// TestHTTPRouteCrossNamespace: a backend in another namespace is protected
// only once a ReferenceGrant there allows it, with the Secret next to the
// Pods; until then the route gets a RefNotPermitted Warning.
func TestHTTPRouteCrossNamespace(t *testing.T) {
	t.Parallel()
	front, back := newNamespace(t, nil), newNamespace(t, nil)
	create(t, gateway(front, "public", true, "api.example.com"))
	create(t, service(back, "api", intstr.FromString("http")))
	create(t, httpRoute(front, "api", map[string]string{controllers.AnnEnabled: "true"}, "public", []string{"api.example.com"}, "api", back))
	create(t, deployment(back, "api", 1, "http"))
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) []string { return routeWarnings(t, g, front, "api") }).WithTimeout(wait).
		Should(gomega.ContainElement(gomega.HavePrefix(controllers.ReasonRefNotPermitted + ":")))
	g.Eventually(func(g gomega.Gomega) []corev1.Pod { return pods(t, g, back, "api") }).WithTimeout(wait).Should(gomega.HaveLen(1))
	expectNoSidecar(t, g, back, "api")

	create(t, &gatewayv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Name: "from-front", Namespace: back}, Spec: gatewayv1.ReferenceGrantSpec{
		From: []gatewayv1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Namespace: gatewayv1.Namespace(front)}},
		To:   []gatewayv1.ReferenceGrantTo{{Group: "", Kind: "Service"}},
	}})
	secret := "gatehouse-httproute." + front + ".api"
	g.Eventually(func(g gomega.Gomega) {
		var s corev1.Secret
		g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: back, Name: secret}, &s)).To(gomega.Succeed())
		ps := pods(t, g, back, "api")
		g.Expect(ps).To(gomega.HaveLen(1))
		g.Expect(sidecarOf(&ps[0])).NotTo(gomega.BeNil())
		g.Expect(mountedSecret(&ps[0])).To(gomega.Equal(secret))
	}).WithTimeout(2 * wait).Should(gomega.Succeed())
}

// TestIngressToHTTPRouteMigration: an HTTPRoute added beside the Ingress
// with the same host and settings changes no Pod; deleting the Ingress
// then replaces each Pod once (it mounts the route's Secret), with the
// same cookie secret, so nobody is logged out.
func TestIngressToHTTPRouteMigration(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	ann := map[string]string{controllers.AnnEnabled: "true", controllers.AnnAllowedGroups: "team-a"}
	create(t, service(ns, "shop", intstr.FromString("http")))
	ing := ingress(ns, "shop", ann, []string{"shop.example.com"}, "shop")
	create(t, ing)
	g := gomega.NewWithT(t)
	var cookie []byte
	g.Eventually(func(g gomega.Gomega) { cookie = secretOf(t, g, ns, "shop").Data[controllers.SecretKeyCookie] }).WithTimeout(wait).Should(gomega.Succeed())
	create(t, deployment(ns, "shop", 2, "http"))
	var before []types.UID
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "shop")
		g.Expect(ps).To(gomega.HaveLen(2))
		for _, p := range ps {
			g.Expect(sidecarOf(&p)).NotTo(gomega.BeNil())
		}
		before = uids(ps)
	}).WithTimeout(wait).Should(gomega.Succeed())

	// Every Pod that ever exists from here on.
	var mu sync.Mutex
	seen := map[types.UID]bool{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			var list corev1.PodList
			if err := k8s.List(t.Context(), &list, client.InNamespace(ns)); err == nil {
				mu.Lock()
				for _, p := range list.Items {
					seen[p.UID] = true
				}
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	create(t, gateway(ns, "public", true, "shop.example.com"))
	create(t, httpRoute(ns, "shop", ann, "public", []string{"shop.example.com"}, "shop", ""))
	routeSecret := "gatehouse-httproute." + ns + ".shop"
	g.Eventually(func(g gomega.Gomega) {
		var s corev1.Secret
		g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: routeSecret}, &s)).To(gomega.Succeed())
		g.Expect(s.Data[controllers.SecretKeyCookie]).To(gomega.Equal(cookie), "the route's Secret has another cookie secret")
	}).WithTimeout(wait).Should(gomega.Succeed())
	g.Consistently(func(g gomega.Gomega) {
		g.Expect(uids(pods(t, g, ns, "shop"))).To(gomega.Equal(before), "adding the route restarted a Pod")
	}).WithTimeout(3 * time.Second).Should(gomega.Succeed())

	var live networkingv1.Ingress
	g.Expect(k8s.Get(t.Context(), client.ObjectKeyFromObject(ing), &live)).To(gomega.Succeed())
	g.Expect(k8s.Delete(t.Context(), &live)).To(gomega.Succeed())
	g.Eventually(func(g gomega.Gomega) {
		ps := pods(t, g, ns, "shop")
		g.Expect(ps).To(gomega.HaveLen(2))
		for _, p := range ps {
			g.Expect(slices.Contains(before, p.UID)).To(gomega.BeFalse())
			g.Expect(sidecarOf(&p)).NotTo(gomega.BeNil())
			g.Expect(mountedSecret(&p)).To(gomega.Equal(routeSecret))
		}
	}).WithTimeout(2 * wait).Should(gomega.Succeed())
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(seen) > 4 {
		t.Errorf("%d Pods existed for 2 replicas during the migration; each Pod should be replaced once", len(seen))
	}
	var s corev1.Secret
	g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: routeSecret}, &s)).To(gomega.Succeed())
	g.Expect(s.Data[controllers.SecretKeyCookie]).To(gomega.Equal(cookie))
}

// TestProviderSecretRotated: a new client secret in a provider's Secret
// reaches the Secrets of the Ingresses and HTTPRoutes that use the
// provider through the watch on it, without waiting for a resync.
func TestProviderSecretRotated(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	ann := map[string]string{controllers.AnnEnabled: "true", controllers.AnnProvider: "rotated"}
	create(t, service(ns, "shop", intstr.FromString("http")))
	create(t, ingress(ns, "shop", ann, []string{"shop.example.com"}, "shop"))
	create(t, service(ns, "api", intstr.FromString("http")))
	create(t, gateway(ns, "public", true, "api.example.com"))
	create(t, httpRoute(ns, "api", ann, "public", nil, "api", ""))
	secrets := []string{"gatehouse-shop", "gatehouse-httproute." + ns + ".api"}
	clientSecrets := func(g gomega.Gomega) []string {
		var out []string
		for _, name := range secrets {
			var s corev1.Secret
			g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, &s)).To(gomega.Succeed())
			out = append(out, string(s.Data[controllers.SecretKeyClientSecret]))
		}
		return out
	}
	g := gomega.NewWithT(t)
	// The provider Secret is the suite's: read what it holds now (a
	// repeated run finds it rotated already), then rotate it.
	var provider corev1.Secret
	g.Expect(k8s.Get(t.Context(), client.ObjectKey{Namespace: managerNS, Name: rotatedSecret}, &provider)).To(gomega.Succeed())
	before := string(provider.Data["client-secret"])
	g.Eventually(clientSecrets).WithTimeout(wait).Should(gomega.Equal([]string{before, before}))

	after := "rotated-" + ns
	provider.Data["client-secret"] = []byte(after)
	g.Expect(k8s.Update(t.Context(), &provider)).To(gomega.Succeed())
	g.Eventually(clientSecrets).WithTimeout(wait).Should(gomega.Equal([]string{after, after}))
}
