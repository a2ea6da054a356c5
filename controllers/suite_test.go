package controllers_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/gatehouse-dev/gatehouse/controllers"
	"github.com/gatehouse-dev/gatehouse/internal/controlplane"
)

// Shared by the package's tests: one control plane, one manager; each test
// works in a namespace of its own.
var (
	k8s       client.Client
	managerNS = "gatehouse-system"
	// webhookConfiguration is the MutatingWebhookConfiguration the
	// controller keeps current.
	webhookConfiguration string
)

const (
	// extraScopeLabel=outside keeps a namespace away from the webhook.
	extraScopeLabel = "gatehouse.test/scope"
	sidecarImage    = "gatehouse:test"
	providerSecret  = "s3cret-from-the-platform-team"
	// rotatedSecret is the Secret of provider rotated, which only
	// TestProviderSecretRotated changes.
	rotatedSecret = "gatehouse-oidc-rotated"
	// brokerTLS is the broker's certificate Secret; the suite's controller
	// does not issue it (NewManager leaves that to Run), so the suite makes
	// one with a CA the tests can change.
	brokerTLS = "gatehouse-broker-tls"
	brokerURL = "https://gatehouse-broker.gatehouse-system.svc"
	// clientKey is the content of the private key Secret of provider
	// keyed, which only the broker may read.
	clientKey = "-----BEGIN PRIVATE KEY-----\nonly-the-broker-reads-this\n-----END PRIVATE KEY-----\n"
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	// Fuzzing runs pure functions in many worker processes, each of which
	// would otherwise start a control plane of its own.
	flag.Parse()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		return m.Run()
	}
	if os.Getenv("GATEHOUSE_SCALE") != "" {
		return runScale(m)
	}
	webhooks, err := scopedWebhooks("../config/webhook/manifests.yaml")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// kube-controller-manager makes Deployments, StatefulSets and
	// DaemonSets really yield Pods (Pending: no scheduler, no kubelet),
	// collects garbage and keeps PodDisruptionBudgets' status.
	crds, err := controlplane.GatewayAPICRDs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cp, err := controlplane.Start(controlplane.Options{
		Root: "..", Progress: os.Stderr, Webhooks: webhooks, CRDPaths: crds,
		Controllers: append(slices.Clone(controlplane.DeploymentControllers),
			"statefulset-controller", "daemonset-controller", "disruption-controller"),
		ControllerManagerFlags: []string{"--concurrent-deployment-syncs=10"},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "control plane: %v\n", err)
		return 1
	}
	defer func() { _ = cp.Stop() }()
	cfg := cp.Config

	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = gatewayv1.Install(scheme)
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: managerNS}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-oidc", Namespace: managerNS},
			Data: map[string][]byte{"client-secret": []byte(providerSecret)}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-redis", Namespace: managerNS},
			Data: map[string][]byte{"password": []byte("redis-pw")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: rotatedSecret, Namespace: managerNS},
			Data: map[string][]byte{"client-secret": []byte("before-rotation")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: brokerTLS, Namespace: managerNS},
			Data: map[string][]byte{"ca.crt": []byte("the broker's CA"), "tls.crt": []byte("crt"), "tls.key": []byte("key")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-client-key", Namespace: managerNS},
			Data: map[string][]byte{"tls.key": []byte(clientKey)}},
	} {
		if err := k8s.Create(ctx, obj); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	// The providers' discovery documents, on loopback: the controller checks
	// them at start, and tests must not reach outside the machine.
	idp := httptest.NewServer(nil)
	idp.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"issuer":%q}`, idp.URL)
	})
	defer idp.Close()
	file, err := controllers.ParseFile([]byte(strings.ReplaceAll(`
providers:
  - name: default
    issuerURL: https://login.example.com
    clientID: gatehouse
    clientSecretRef: {name: gatehouse-oidc, key: client-secret}
    scopes: [openid, email, profile]
    allowedNamespaces: ["*"]
  - name: rotated
    issuerURL: https://login.example.com
    clientID: rotated
    clientSecretRef: {name: gatehouse-oidc-rotated, key: client-secret}
    allowedNamespaces: ["*"]
  - name: restricted
    issuerURL: https://login.example.com
    clientID: other
    allowedNamespaces: [nobody]
  - name: brokered
    issuerURL: https://login.example.com
    clientID: brokered
    clientSecretRef: {name: gatehouse-oidc, key: client-secret}
    clientSecretMode: broker
    allowedNamespaces: ["*"]
  - name: keyed
    issuerURL: https://login.example.com
    clientID: keyed
    clientKeyRef: {name: gatehouse-client-key, key: tls.key}
    clientSecretMode: broker
    allowedNamespaces: ["*"]
  - name: shared
    issuerURL: https://login.example.com
    clientID: shared
    clientSecretRef: {name: gatehouse-oidc, key: client-secret}
    sessionStore:
      redisURL: redis://redis.gatehouse-system:6379/0
      passwordSecretRef: {name: gatehouse-redis, key: password}
defaults:
  provider: default
  sidecar:
    resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {memory: 64Mi}}
    resourceBounds: {max: {memory: 512Mi}}
`, "https://login.example.com", idp.URL)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ccfg := controllers.DefaultConfig()
	ccfg.ConfigFile = "unused"
	ccfg.SidecarImage = sidecarImage
	ccfg.WebhookConfiguration = webhooks[0].Name
	webhookConfiguration = webhooks[0].Name
	ccfg.Namespace = managerNS
	ccfg.LeaderElect = false
	// A retired Ingress's Secret goes soon after no Pod mounts it.
	ccfg.SecretRetention = 2 * time.Second
	ccfg.BrokerURL = brokerURL
	ccfg.BrokerTLSSecret = brokerTLS
	ccfg.MetricsAddress = "127.0.0.1:0"
	ccfg.HealthAddress = "127.0.0.1:0"
	wio := cp.Env.WebhookInstallOptions
	ccfg.WebhookPort = wio.LocalServingPort
	ccfg.WebhookCertDir = wio.LocalServingCertDir
	log := logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	mgr, err := controllers.NewManager(ccfg, file, controllers.Options{RESTConfig: cfg, Log: log, WebhookHost: wio.LocalServingHost})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		fmt.Fprintln(os.Stderr, "cache did not sync")
		return 1
	}
	return m.Run()
}

// matchConditions are the chart's: host-network Pods and Pods without a
// named container port never reach the webhook.
var matchConditions = []admissionv1.MatchCondition{
	{Name: "not-host-network", Expression: "!has(object.spec.hostNetwork) || !object.spec.hostNetwork"},
	{Name: "has-named-port", Expression: "object.spec.containers.exists(c, has(c.ports) && c.ports.exists(p, has(p.name) && p.name != ''))"},
}

// scopedWebhooks loads the generated webhook configuration and scopes it
// the way the chart does: never the control plane, the controller's own
// namespace, or namespaces that opted out.
func scopedWebhooks(path string) ([]*admissionv1.MutatingWebhookConfiguration, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*admissionv1.MutatingWebhookConfiguration
	for doc := range strings.SplitSeq(string(raw), "\n---\n") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" {
			continue
		}
		var wh admissionv1.MutatingWebhookConfiguration
		if err := yaml.UnmarshalStrict([]byte(doc), &wh); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for i := range wh.Webhooks {
			wh.Webhooks[i].NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system", managerNS}},
				{Key: controllers.NamespaceInjectionLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"disabled"}},
				// An exclusion of the chart's webhook.namespaceSelector
				// kind, which only the configuration knows.
				{Key: extraScopeLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"outside"}},
				// The chart's placeholder; the controller keeps it current.
				{Key: controllers.NamespaceNameLabel, Operator: metav1.LabelSelectorOpIn, Values: []string{controllers.NoNamespace}},
			}}
			wh.Webhooks[i].MatchConditions = matchConditions
		}
		out = append(out, &wh)
	}
	return out, nil
}
