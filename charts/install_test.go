package charts_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

// TestDryRun applies every object each value set renders (the helm test
// Pod included) with server-side apply in dry-run mode, in a namespace that
// enforces the restricted Pod Security Standard. Any error or API warning
// (an unknown field, a Pod template the standard would refuse) fails.
func TestDryRun(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	run := runSuffix(&dryRuns)
	for _, set := range valueSets(t) {
		t.Run(set, func(t *testing.T) {
			t.Parallel()
			// A release and namespace of its own: cluster-scoped objects
			// must not merge into TestInstall's.
			ns := "dryrun-" + set + run
			createObject(t, c.client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{
				"pod-security.kubernetes.io/enforce": "restricted",
				"pod-security.kubernetes.io/warn":    "restricted",
				// TestInstall's webhook must never see these Pods.
				controllers.NamespaceInjectionLabel: "disabled",
			}}})
			_, r := renderRelease(t, ns, set, ns)
			warnings := &warningLog{}
			cfg := rest.CopyConfig(c.config)
			cfg.WarningHandlerWithContext = warnings
			cl, err := client.New(cfg, client.Options{})
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range r.objs {
				before := warnings.len()
				err := cl.Apply(t.Context(), client.ApplyConfigurationFromUnstructured(o),
					client.FieldOwner("helm"), client.ForceOwnership, client.DryRunAll)
				if err != nil {
					t.Errorf("%s %s: %v", o.GetKind(), o.GetName(), err)
				}
				if w := warnings.since(before); len(w) > 0 {
					t.Errorf("%s %s: API warnings %q", o.GetKind(), o.GetName(), w)
				}
			}
		})
	}
}

// TestInstall installs the chart for real and runs the controller binary
// exactly as the installed Deployment would, as the chart's ServiceAccount,
// with only what running outside the cluster needs changed: the config file
// comes from the installed ConfigMap, the addresses are loopback ports, and
// --webhook-url points the webhook at the process, since the API server
// cannot reach a Service without a Pod network. helm test's command runs
// likewise, as the test's ServiceAccount with the release's hook RBAC: it
// fails before the controller set the caBundle and passes after.
func TestInstall(t *testing.T) {
	t.Parallel()
	// go test -count=N runs again on the same control plane: names of
	// its own for each run.
	run := runSuffix(&installRuns)
	release, releaseNS := releaseName+run, releaseNS+run
	binDir := t.TempDir()
	built := make(chan error, 1)
	go func() { built <- buildGatehouse(t.Context(), binDir) }()

	c := cluster(t)
	ctx := t.Context()
	g := gomega.NewWithT(t)
	g.SetDefaultEventuallyTimeout(30 * time.Second)
	g.SetDefaultEventuallyPollingInterval(100 * time.Millisecond)

	// The provider's discovery document, on loopback: the controller
	// checks it at start.
	var discovered atomic.Bool
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.well-known/openid-configuration" {
			discovered.Store(true)
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"issuer":%q}`, "http://"+r.Host)
	}))
	t.Cleanup(idp.Close)
	values := writeFile(t, "values.yaml", fmt.Sprintf(`providers:
  - name: corp
    issuerURL: %s
    clientID: gatehouse
    clientSecretRef: {name: gatehouse-oidc, key: client-secret}
    allowedNamespaces: ["*"]
`, idp.URL))
	onCluster := []string{"--kubeconfig", c.kubeconfig, "--namespace", releaseNS}
	if _, err := helm(t, append([]string{"install", release, chartDir, "--create-namespace", "-f", values}, onCluster...)...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Leave no fail-closed webhook behind for another run.
		if _, err := helm(t, append([]string{"uninstall", release}, onCluster...)...); err != nil {
			t.Error(err)
		}
	})

	// The provider's Secret, and an app behind an annotated Ingress, exist
	// before the controller starts, so its caches hold them once it is
	// ready.
	const clientSecret = "s3cret-from-the-platform-team"
	createObject(t, c.client, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-oidc", Namespace: releaseNS},
		Data: map[string][]byte{"client-secret": []byte(clientSecret)}})
	app := "shop" + run
	appLabels := map[string]string{"app": app}
	createObject(t, c.client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: app}})
	createObject(t, c.client, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: app},
		Spec: corev1.ServiceSpec{Selector: appLabels, Ports: []corev1.ServicePort{{Name: "web", Port: 80, TargetPort: intstr.FromString("http")}}}})
	createObject(t, c.client, &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: app, Annotations: map[string]string{controllers.AnnEnabled: "true"}},
		Spec: networkingv1.IngressSpec{
			TLS: []networkingv1.IngressTLS{{Hosts: []string{"shop.example.com"}, SecretName: "shop-tls"}},
			Rules: []networkingv1.IngressRule{{Host: "shop.example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: ptrTo(networkingv1.PathTypePrefix), Backend: networkingv1.IngressBackend{
					Service: &networkingv1.IngressServiceBackend{Name: app, Port: networkingv1.ServiceBackendPort{Number: 80}}}}},
			}}}},
		},
	})

	// What the chart installed: the controller's command line and identity.
	dep, ctr := installedController(t, c.client, release, releaseNS)
	flags := parseFlags(t, ctr.Args[1:])
	sa := dep.Spec.Template.Spec.ServiceAccountName
	user, err := c.env.AddUser(envtest.User{
		Name:   "system:serviceaccount:" + releaseNS + ":" + sa,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + releaseNS, "system:authenticated"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	asSA, err := client.New(user.Config(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}

	// 0. helm test's check before the controller ran: the webhook has no
	// caBundle yet, so it must fail, as the test's own ServiceAccount with
	// only the chart's hook RBAC. helm install leaves hooks out, and helm
	// test needs a kubelet, so create the release's test RBAC as helm test
	// would and run the test Pod's command here.
	testPod, testKubeconfig := installTestHooks(t, c, release, onCluster)
	check := containerNamed(t, testPod.Spec.Containers, "webhook-check")
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "gatehouse")
	checkArgs := append(slices.Clone(check.Args), "--kubeconfig="+testKubeconfig)
	out, err := exec.CommandContext(ctx, bin, checkArgs...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "the API server has no CA for the webhook yet") {
		t.Fatalf("gatehouse %s before the controller set the caBundle: %v, want a failure that says so\n%s", strings.Join(checkArgs, " "), err, out)
	}

	// 1. What the controller does first at start without --webhook-url,
	// with the chart's names and only its ServiceAccount's rights: make the
	// certificate Secret and set the caBundle. (In-process, so that no
	// webhook server listens beyond loopback: without --webhook-url it
	// would listen on every address.)
	mwcName, secretName := flags["webhook-configuration"], flags["webhook-service"]+"-tls"
	err = controllers.SyncWebhookCertificate(ctx, asSA, asSA, controllers.WebhookCertOptions{
		Namespace: releaseNS, SecretName: secretName, Service: flags["webhook-service"], Configuration: mwcName, Dir: t.TempDir(),
	}, logr.Discard())
	if err != nil {
		t.Fatalf("webhook certificate as the chart's ServiceAccount: %v", err)
	}
	var certSecret corev1.Secret
	getObject(t, c.client, releaseNS, secretName, &certSecret)
	caBundle := webhookConfig(t, c.client, mwcName).Webhooks[0].ClientConfig.CABundle
	if len(caBundle) == 0 || !bytes.Equal(caBundle, certSecret.Data["ca.crt"]) {
		t.Fatalf("caBundle %q is not the CA of Secret %s", caBundle, secretName)
	}
	// The webhook fails closed, and the API server cannot reach its
	// Service here: Pods are admitted only where it never looks. Until the
	// controller lists the namespaces Gatehouse protects, that is
	// everywhere, the app's namespace included.
	createObject(t, c.client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "opted-out" + run,
		Labels: map[string]string{controllers.NamespaceInjectionLabel: "disabled"}}})
	if got := protectedNamespaces(t, webhookConfig(t, c.client, mwcName).Webhooks[0]); !slices.Equal(got, []string{protectedNamespacesPlaceholder}) {
		t.Fatalf("a fresh install's webhook lists namespaces %q, want only the placeholder %q", got, protectedNamespacesPlaceholder)
	}
	for _, ns := range []string{releaseNS, "opted-out" + run, app} {
		pod := appPod(ns, "before-controller", map[string]string{"app": "batch"})
		if err := c.client.Create(ctx, pod); err != nil {
			t.Fatalf("a Pod in namespace %s went to the webhook: %v", ns, err)
		}
	}

	// 2. helm upgrade with changed values keeps the caBundle it does not
	// own, and rolls the controller when its config changes.
	upgrade := writeFile(t, "upgrade.yaml", `logLevel: debug
webhook:
  timeoutSeconds: 15
`)
	scopes := []string{"--set", "providers[0].scopes={openid,email,profile,groups}"}
	if _, err := helm(t, append(append([]string{"upgrade", release, chartDir, "-f", values, "-f", upgrade}, scopes...), onCluster...)...); err != nil {
		t.Fatal(err)
	}
	mwc := webhookConfig(t, c.client, mwcName)
	if wh := mwc.Webhooks[0]; wh.TimeoutSeconds == nil || *wh.TimeoutSeconds != 15 || !bytes.Equal(wh.ClientConfig.CABundle, caBundle) || wh.ClientConfig.Service == nil {
		t.Fatalf("after helm upgrade the webhook is %+v; want timeoutSeconds 15, the Service, and the caBundle unchanged", wh)
	}
	upgraded, ctr := installedController(t, c.client, release, releaseNS)
	if old, now := dep.Spec.Template.Annotations["checksum/config"], upgraded.Spec.Template.Annotations["checksum/config"]; old == now {
		t.Errorf("the config changed but the Pod template's checksum/config did not (%s)", now)
	}
	flags = parseFlags(t, ctr.Args[1:])
	if flags["log-level"] != "debug" {
		t.Errorf("after helm upgrade the controller runs %q, want --log-level=debug", ctr.Args)
	}

	// 3. The controller binary with the installed Deployment's arguments.
	var cm corev1.ConfigMap
	getObject(t, c.client, releaseNS, volumeAt(t, upgraded.Spec.Template.Spec, ctr, path.Dir(flags["config"])).ConfigMap.Name, &cm)
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	image := envValue(t, ctr, "GATEHOUSE_IMAGE")
	configFile := writeFile(t, "config.yaml", cm.Data[path.Base(flags["config"])])
	kubeconfigFile := writeFile(t, "kubeconfig", string(kubeconfig))
	// The ports are picked free and then bound by the controller; another
	// process may take one in between, so a controller that could not
	// bind is started again on new ports.
	var webhookURL string
	var proc *controllerProc
	for attempt := 1; ; attempt++ {
		webhookPort := freePort(t)
		webhookURL = fmt.Sprintf("https://127.0.0.1:%d%s", webhookPort, controllers.WebhookPath)
		health := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		args := withFlags(ctr.Args[1:], map[string]string{
			"config":          configFile,
			"kubeconfig":      kubeconfigFile,
			"metrics-address": fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			"health-address":  health,
			"webhook-port":    fmt.Sprint(webhookPort),
			"webhook-url":     webhookURL,
		})
		proc = startController(t, bin, append([]string{"controller"}, args...), []string{
			"POD_NAMESPACE=" + releaseNS, "GATEHOUSE_IMAGE=" + image,
		})
		err := proc.waitReady("http://" + health + "/readyz")
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(proc.log(), "address already in use") {
			t.Fatalf("the controller never became ready: %v", err)
		}
	}
	g.Eventually(discovered.Load).Should(gomega.BeTrue(), "the controller never read the provider's discovery document")

	// It renewed the certificate for 127.0.0.1 under the same CA and
	// pointed the webhook at itself.
	wh := webhookConfig(t, c.client, mwcName).Webhooks[0]
	if wh.ClientConfig.URL == nil || *wh.ClientConfig.URL != webhookURL || wh.ClientConfig.Service != nil || !bytes.Equal(wh.ClientConfig.CABundle, caBundle) {
		t.Fatalf("webhook client config %+v; want %s and the same caBundle", wh.ClientConfig, webhookURL)
	}
	// It leads (the chart's Role covers the Lease) and reconciles: the
	// provider is in broker mode, the chart's default, so the per-Ingress
	// Secret has the CA of the broker's certificate, which the controller
	// issued, and no client secret; the broker registry lists the app's
	// callback URL (the Role covers the ConfigMap).
	g.Eventually(func(g gomega.Gomega) {
		var lease coordinationv1.Lease
		g.Expect(c.client.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: "gatehouse-controller"}, &lease)).To(gomega.Succeed())
		g.Expect(lease.Spec.HolderIdentity).NotTo(gomega.BeNil())
	}).Should(gomega.Succeed(), "the controller never took the leader-election Lease")
	g.Eventually(func(g gomega.Gomega) {
		var s corev1.Secret
		g.Expect(c.client.Get(ctx, client.ObjectKey{Namespace: app, Name: "gatehouse-" + app}, &s)).To(gomega.Succeed())
		g.Expect(s.Data).NotTo(gomega.HaveKey(controllers.SecretKeyClientSecret))
		var brokerTLS corev1.Secret
		g.Expect(c.client.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: flags["broker-tls-secret"]}, &brokerTLS)).To(gomega.Succeed())
		g.Expect(brokerTLS.Data["ca.crt"]).NotTo(gomega.BeEmpty())
		g.Expect(string(s.Data[controllers.SecretKeyBrokerCA])).To(gomega.Equal(string(brokerTLS.Data["ca.crt"])))
		var registry corev1.ConfigMap
		g.Expect(c.client.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: flags["broker-registry"]}, &registry)).To(gomega.Succeed())
		g.Expect(registry.Data).To(gomega.HaveKeyWithValue(app, `{"corp":["https://shop.example.com/_gatehouse/callback"]}`))
	}).Should(gomega.Succeed(), "the per-Ingress Secret never appeared")

	// The controller puts the app's namespace, which has an enabled
	// Ingress, into the webhook's scope; then a Pod behind the Ingress gets
	// the sidecar, of the chart's image.
	g.Eventually(func(g gomega.Gomega) {
		g.Expect(protectedNamespaces(t, webhookConfig(t, c.client, mwcName).Webhooks[0])).To(gomega.Equal([]string{app}))
	}).Should(gomega.Succeed(), "the controller never listed the app's namespace in the webhook's namespaceSelector")
	var pod *corev1.Pod
	g.Eventually(func() error {
		pod = appPod(app, "web", appLabels)
		return c.client.Create(ctx, pod)
	}).Should(gomega.Succeed(), "the app's Pod was never admitted")
	i := slices.IndexFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == controllers.SidecarName })
	if i < 0 || pod.Spec.InitContainers[i].Image != image {
		t.Fatalf("the app's Pod has init containers %+v; want the %s sidecar of image %s", pod.Spec.InitContainers, controllers.SidecarName, image)
	}
	// A Pod in the release namespace is left alone.
	own := appPod(releaseNS, "after-controller", appLabels)
	if err := c.client.Create(ctx, own); err != nil || len(own.Spec.InitContainers) != 0 {
		t.Fatalf("a Pod in the release namespace: err %v, init containers %+v; want it admitted unchanged", err, own.Spec.InitContainers)
	}

	// helm test's check, as its ServiceAccount, trusting the caBundle the
	// API server has, against the webhook the controller pointed it at.
	checkArgs = append([]string{"webhook-check"}, withFlags(check.Args[1:], map[string]string{"url": webhookURL, "kubeconfig": testKubeconfig})...)
	out, err = exec.CommandContext(ctx, bin, checkArgs...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "allowed the test Pod") {
		t.Fatalf("gatehouse %s: %v\n%s", strings.Join(checkArgs, " "), err, out)
	}
	// Without the chart's RBAC, helm test trusts the Secret's CA instead.
	getObject(t, c.client, releaseNS, secretName, &certSecret)
	caFile := writeFile(t, "ca.crt", string(certSecret.Data["ca.crt"]))
	out, err = exec.CommandContext(ctx, bin, "webhook-check", "--url", webhookURL, "--ca-file", caFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "allowed the test Pod") {
		t.Fatalf("gatehouse webhook-check --ca-file: %v\n%s", err, out)
	}

	// 4. The blast radius of a stopped controller: the webhook fails
	// closed in the protected namespace only, and never sees host-network
	// Pods or Pods without a named port (matchConditions).
	proc.stop(t)
	if err := c.client.Create(ctx, appPod(app, "while-stopped", appLabels)); err == nil {
		t.Error("a Pod behind the protected Ingress started without the sidecar while the controller was stopped")
	}
	hostNetwork := appPod(app, "host-network", appLabels)
	hostNetwork.Spec.HostNetwork = true
	unnamed := appPod(app, "unnamed-port", appLabels)
	unnamed.Spec.Containers[0].Ports[0].Name = ""
	createObject(t, c.client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "elsewhere" + run}})
	for _, p := range []*corev1.Pod{hostNetwork, unnamed, appPod("elsewhere"+run, "while-stopped", appLabels)} {
		if err := c.client.Create(ctx, p); err != nil {
			t.Errorf("Pod %s/%s went to the stopped controller's webhook: %v", p.Namespace, p.Name, err)
		}
	}
	// A provider without clientSecretMode stays as the live release has
	// it: in broker mode here, in copy mode after a release from before the
	// broker (whose config file had no clientSecretMode), so that an
	// upgrade replaces no Pod. One that moves to a private key goes to
	// the broker whatever the live release has: only the broker signs.
	keyed := writeFile(t, "keyed.yaml", fmt.Sprintf(`providers:
  - name: corp
    issuerURL: %s
    clientID: gatehouse
    clientKeyRef: {name: gatehouse-oidc-key, key: tls.key}
    allowedNamespaces: ["*"]
`, idp.URL))
	for _, tc := range []struct{ live, values, want string }{{"broker", values, "broker"}, {"", values, "copy"}, {"", keyed, "broker"}} {
		var cm corev1.ConfigMap
		key := client.ObjectKey{Namespace: releaseNS, Name: release + "-config"}
		if err := c.client.Get(ctx, key, &cm); err != nil {
			t.Fatal(err)
		}
		if tc.live == "" {
			cm.Data["config.yaml"] = strings.ReplaceAll(cm.Data["config.yaml"], "clientSecretMode: broker", "")
			if err := c.client.Update(ctx, &cm); err != nil {
				t.Fatal(err)
			}
		}
		out, err := helm(t, append([]string{"upgrade", release, chartDir, "-f", tc.values, "--dry-run=server"}, onCluster...)...)
		if err != nil {
			t.Fatal(err)
		}
		_, manifest, _ := strings.Cut(out, "\nMANIFEST:\n")
		manifest, _, _ = strings.Cut(manifest, "\nNOTES:\n")
		objs, err := splitObjects(manifest)
		if err != nil {
			t.Fatal(err)
		}
		next := as[corev1.ConfigMap](t, rendered{objs: objs}.get(t, "ConfigMap", key.Name))
		file, err := controllers.ParseFile([]byte(next.Data["config.yaml"]))
		if err != nil {
			t.Fatal(err)
		}
		if p, _ := file.Provider("corp"); p.ClientSecretMode != tc.want {
			t.Errorf("live provider in mode %q: helm upgrade renders clientSecretMode %q, want %q", tc.live, p.ClientSecretMode, tc.want)
		}
	}

	// helm upgrade renders the namespaces the controller listed, not the
	// placeholder. (Only rendered: applied, it would also put back the
	// Service that --webhook-url replaced.)
	dryRun, err := helm(t, append([]string{"upgrade", release, chartDir, "-f", values, "--dry-run=server"}, onCluster...)...)
	if err != nil {
		t.Fatal(err)
	}
	_, manifest, _ := strings.Cut(dryRun, "\nMANIFEST:\n")
	manifest, _, _ = strings.Cut(manifest, "\nNOTES:\n")
	objs, err := splitObjects(manifest)
	if err != nil {
		t.Fatalf("helm upgrade --dry-run=server: %v\n%s", err, dryRun)
	}
	nextMWC := as[admissionregistrationv1.MutatingWebhookConfiguration](t, rendered{objs: objs}.get(t, "MutatingWebhookConfiguration", mwcName))
	if got := protectedNamespaces(t, nextMWC.Webhooks[0]); !slices.Equal(got, []string{app}) {
		t.Errorf("helm upgrade would set the webhook's namespaces to %q, want the controller's %q", got, []string{app})
	}
}

// protectedNamespaces returns the values of the webhook's
// `kubernetes.io/metadata.name In` requirement, the one the controller
// keeps current, found as the controller finds it.
func protectedNamespaces(t *testing.T, wh admissionregistrationv1.MutatingWebhook) []string {
	t.Helper()
	if wh.NamespaceSelector == nil {
		t.Fatalf("webhook %s has no namespaceSelector", wh.Name)
	}
	for _, e := range wh.NamespaceSelector.MatchExpressions {
		if e.Key == corev1.LabelMetadataName && e.Operator == metav1.LabelSelectorOpIn {
			return e.Values
		}
	}
	t.Fatalf("webhook %s namespaceSelector %+v has no %s In requirement", wh.Name, wh.NamespaceSelector, corev1.LabelMetadataName)
	return nil
}

// installTestHooks creates the installed release's helm test hooks except
// the Pod (its ServiceAccount, ClusterRole and ClusterRoleBinding), from
// what helm itself stored for the release, as helm test would; they go
// when the test ends. It returns the test Pod and a kubeconfig file of its
// ServiceAccount, whose rights are only what those hooks grant.
func installTestHooks(t *testing.T, c *testCluster, release string, onCluster []string) (*corev1.Pod, string) {
	t.Helper()
	out, err := helm(t, append([]string{"get", "hooks", release}, onCluster...)...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := splitObjects(out)
	if err != nil {
		t.Fatalf("helm get hooks: %v", err)
	}
	hooks := rendered{objs: objs}
	pod := as[corev1.Pod](t, hooks.get(t, "Pod", ""))
	for _, o := range hooks.objs {
		if o.GetKind() == "Pod" {
			continue
		}
		o = o.DeepCopy()
		if err := c.client.Create(t.Context(), o); err != nil {
			t.Fatalf("create helm test hook %s %s: %v", o.GetKind(), o.GetName(), err)
		}
		t.Cleanup(func() {
			if err := c.client.Delete(context.WithoutCancel(t.Context()), o); err != nil {
				t.Errorf("delete helm test hook %s %s: %v", o.GetKind(), o.GetName(), err)
			}
		})
	}
	user, err := c.env.AddUser(envtest.User{
		Name:   "system:serviceaccount:" + pod.Namespace + ":" + pod.Spec.ServiceAccountName,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + pod.Namespace, "system:authenticated"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	return pod, writeFile(t, "test.kubeconfig", string(kubeconfig))
}

// installRuns and dryRuns count the runs of TestInstall and TestDryRun.
var installRuns, dryRuns atomic.Int32

// runSuffix is "" for a test's first run, then "-2", "-3", ...
func runSuffix(runs *atomic.Int32) string {
	if n := runs.Add(1); n > 1 {
		return fmt.Sprintf("-%d", n)
	}
	return ""
}

// installedController returns the installed Deployment and its controller
// container.
func installedController(t *testing.T, c client.Client, release, releaseNS string) (*appsv1.Deployment, *corev1.Container) {
	t.Helper()
	var deps appsv1.DeploymentList
	if err := c.List(t.Context(), &deps, client.InNamespace(releaseNS), client.MatchingLabels{"app.kubernetes.io/instance": release, "app.kubernetes.io/component": "controller"}); err != nil {
		t.Fatal(err)
	}
	if len(deps.Items) != 1 {
		t.Fatalf("%d Deployments installed, want 1", len(deps.Items))
	}
	dep := &deps.Items[0]
	return dep, containerNamed(t, dep.Spec.Template.Spec.Containers, "controller")
}

// controllerProc is a controller process started by startController.
type controllerProc struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	err     error         // its exit, once done is closed
}

func (p *controllerProc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// waitReady polls url until it answers 200, the process exits, or a
// minute passes.
func (p *controllerProc) waitReady(url string) error {
	deadline := time.After(time.Minute)
	for {
		if res, err := http.Get(url); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			if p.err == nil {
				return errors.New("the controller exited with status 0")
			}
			return fmt.Errorf("the controller exited: %w", p.err)
		case <-deadline:
			return errors.New("no 200 from /readyz within a minute")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startController runs the controller until the test ends (or p.stop),
// then stops it with SIGTERM and expects a clean exit; its log is shown
// when the test fails.
func startController(t *testing.T, bin string, args, env []string) *controllerProc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "controller.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("gatehouse %s\n%s", strings.Join(args, " "), b)
		}
	})
	cmd := exec.Command(bin, args...)
	cmd.Env = append(env, "TMPDIR="+t.TempDir(), "HOME="+t.TempDir(), "PATH="+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &controllerProc{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return // exited early or stopped; the test has said why
		default:
		}
		p.stop(t)
	})
	return p
}

// stop sends SIGTERM and expects a clean exit within 30 seconds.
func (p *controllerProc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("stop the controller: %v", err)
	}
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("the controller exited with %v after SIGTERM", p.err)
		}
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Errorf("the controller did not stop within 30s of SIGTERM")
		<-p.done
	}
}

// buildGatehouse builds cmd/gatehouse into dir, with the race detector when
// the test has it.
func buildGatehouse(ctx context.Context, dir string) error {
	args := []string{"build", "-o", filepath.Join(dir, "gatehouse")}
	if raceBuild {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/gatehouse")...)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(cmd.Args[1:], " "), err, out)
	}
	return nil
}

// withFlags replaces or adds the given flags in --name=value arguments.
func withFlags(args []string, set map[string]string) []string {
	var out []string
	done := map[string]bool{}
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if v, ok := set[name]; ok {
			a, done[name] = "--"+name+"="+v, true
		}
		out = append(out, a)
	}
	var added []string
	for name, v := range set {
		if !done[name] {
			added = append(added, "--"+name+"="+v)
		}
	}
	sort.Strings(added)
	return append(out, added...)
}

func appPod(ns, name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "registry.example.com/shop:1",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
	}
}

func webhookConfig(t *testing.T, c client.Client, name string) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	getObject(t, c, "", name, &mwc)
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("MutatingWebhookConfiguration %s has %d webhooks, want 1", name, len(mwc.Webhooks))
	}
	return &mwc
}

func envValue(t *testing.T, c *corev1.Container, name string) string {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == name && e.Value != "" {
			return e.Value
		}
	}
	t.Fatalf("container %s has no %s", c.Name, name)
	return ""
}

func createObject(t *testing.T, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Create(t.Context(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

func getObject(t *testing.T, c client.Client, ns, name string, obj client.Object) {
	t.Helper()
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
		t.Fatalf("get %T %s/%s: %v", obj, ns, name, err)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// freePort is a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// warningLog records the API server's warnings.
type warningLog struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningLog) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warningLog) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.msgs)
}

func (w *warningLog) since(n int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.msgs[n:])
}
