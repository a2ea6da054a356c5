// Package demo brings up Gatehouse's local demo: a local control plane, the
// controller, the token broker, a real OpenID provider, a sample app behind
// an annotated Ingress, and the sidecar the controller injected, run with
// the injected command line in front of the sample app. The provider is in
// broker mode, the chart's default: the sidecar holds no client secret. hack/demo runs it for
// `make demo`; the browser test drives it.
package demo

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gatehouse-dev/gatehouse/controllers"
	"github.com/gatehouse-dev/gatehouse/e2e/idp"
	"github.com/gatehouse-dev/gatehouse/internal/controlplane"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// What the demo creates.
const (
	ControllerNamespace = "gatehouse-system"
	AppNamespace        = "demo"
	AppName             = "hello"
	// AllowedGroup may enter: the IdP's demo user is in it, alice is not.
	AllowedGroup = "developers"
	// Host is the sample Ingress's host; the browser opens it on ProxyPort.
	Host = "localhost"

	// AppServiceAccount is the sample app's ServiceAccount, whose
	// projected token the sidecar shows the broker.
	AppServiceAccount = "hello"

	clientID       = "gatehouse-demo"
	providerSecret = "gatehouse-oidc"
	webhookName    = "gatehouse"
	readyTimeout   = 90 * time.Second
	// brokerTLSSecret is where the controller issues the broker's
	// certificate (its --broker-tls-secret default).
	brokerTLSSecret = "gatehouse-broker-tls"
)

// Options configure Start. Zero ports mean the defaults.
type Options struct {
	// Root is the repository root.
	Root string
	// Bin holds gatehouse and gatehouse-sidecar (default Root/bin).
	Bin string
	// Ports on 127.0.0.1: the sidecar (4180), the sample app (8080), the
	// IdP (5556) and the sidecar's metrics (9090). The controller's ports
	// are picked free.
	ProxyPort, AppPort, IdPPort, MetricsPort int
	// Out receives the steps as they happen.
	Out io.Writer
	// GatewayAPI puts the sample app behind an annotated Gateway API
	// HTTPRoute (and a Gateway) instead of an Ingress.
	GatewayAPI bool
	// AccessTokenTTL is the IdP's access token lifetime (default one
	// hour), shorter to see refreshes.
	AccessTokenTTL time.Duration
	// PrivateKeyJWT gives the provider a private key (clientKeyRef) instead
	// of a client secret: the broker authenticates to the IdP with
	// private_key_jwt, and no client secret exists anywhere.
	PrivateKeyJWT bool
}

// Demo is a running demo.
type Demo struct {
	// URL is the protected app's address for a browser.
	URL string
	// MetricsURL is the sidecar's metrics.
	MetricsURL string
	// IdP is the running OpenID provider.
	IdP *idp.IdP
	// SidecarArgs is the injected sidecar's command line; LocalArgs the same
	// with the changes for running next to, not in, the Pod.
	SidecarArgs, LocalArgs []string
	// Dir holds the processes' logs.
	Dir string
	// BrokerURL is where the token broker listens, on 127.0.0.1, and
	// BrokerMetricsURL its metrics.
	BrokerURL, BrokerMetricsURL string
	// Pod is the sample app's injected Pod.
	Pod *corev1.Pod

	opts    Options
	cp      *controlplane.ControlPlane
	k8s     client.Client
	procs   []*process
	closers []io.Closer
	// clientKey is the provider's private key with PrivateKeyJWT.
	clientKey *rsa.PrivateKey
	// broker runs the token broker; brokerArgs are its arguments.
	broker       *process
	brokerArgs   []string
	brokerHealth string
}

// Start brings the demo up, step by step, and returns once the sidecar is
// ready. On error it stops what it started.
func Start(ctx context.Context, opts Options) (*Demo, error) {
	opts = withDefaults(opts)
	d := &Demo{opts: opts}
	if err := d.start(ctx); err != nil {
		if serr := d.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
		return nil, err
	}
	return d, nil
}

func (d *Demo) start(ctx context.Context) (err error) {
	opts := d.opts
	if d.Dir, err = os.MkdirTemp("", "gatehouse-demo-"); err != nil {
		return err
	}
	for _, port := range []int{opts.ProxyPort, opts.AppPort, opts.IdPPort, opts.MetricsPort} {
		if port < 1 || port > 65535 {
			return fmt.Errorf("%d is not a port", port)
		}
		if err := portFree(port); err != nil {
			return err
		}
	}
	base := fmt.Sprintf("http://%s:%d", Host, opts.ProxyPort)
	d.URL = base + "/"
	d.MetricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", opts.MetricsPort)

	d.step("Starting the local control plane (etcd, kube-apiserver, kube-controller-manager)")
	d.say("the first run builds them from the Go module proxy, about ten minutes on two cores")
	var crds []string
	if opts.GatewayAPI {
		if crds, err = controlplane.GatewayAPICRDs(opts.Root); err != nil {
			return err
		}
	}
	if d.cp, err = controlplane.Start(controlplane.Options{
		Root: opts.Root, Progress: opts.Out, Controllers: controlplane.DeploymentControllers, CRDPaths: crds,
	}); err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = gatewayv1.Install(scheme)
	if d.k8s, err = client.New(d.cp.Config, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	d.say("API server at %s", d.cp.Config.Host)

	var jwks string
	if opts.PrivateKeyJWT {
		if d.clientKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return err
		}
		jwk := jose.JSONWebKey{Key: d.clientKey.Public(), Algorithm: string(jose.RS256), Use: "sig"}
		thumb, err := jwk.Thumbprint(crypto.SHA256)
		if err != nil {
			return err
		}
		jwk.KeyID = base64.RawURLEncoding.EncodeToString(thumb)
		b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}})
		if err != nil {
			return err
		}
		jwks = string(b)
	}
	d.step("Starting the identity provider (npm oidc-provider) on 127.0.0.1:%d", opts.IdPPort)
	idpLog, err := os.Create(filepath.Join(d.Dir, "idp.log"))
	if err != nil {
		return err
	}
	d.closers = append(d.closers, idpLog)
	d.IdP, err = idp.Launch(idp.Options{
		Port:                   opts.IdPPort,
		ClientID:               clientID,
		RedirectURIs:           []string{base + "/_gatehouse/callback"},
		PostLogoutRedirectURIs: []string{base + "/"},
		AccessTokenTTL:         opts.AccessTokenTTL,
		ClientJWKS:             jwks,
	}, func(format string, args ...any) { fmt.Fprintf(idpLog, format+"\n", args...) })
	if err != nil {
		return fmt.Errorf("identity provider: %w", err)
	}
	d.say("issuer %s, client %s", d.IdP.Issuer, clientID)

	if err := d.startController(ctx); err != nil {
		return err
	}
	if err := d.startBroker(ctx); err != nil {
		return err
	}
	pod, err := d.deployApp(ctx)
	if err != nil {
		return err
	}
	d.Pod = pod
	return d.runSidecar(ctx, pod)
}

func withDefaults(o Options) Options {
	if o.Bin == "" {
		o.Bin = filepath.Join(o.Root, "bin")
	}
	set := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	set(&o.ProxyPort, 4180)
	set(&o.AppPort, 8080)
	set(&o.IdPPort, 5556)
	set(&o.MetricsPort, 9090)
	if o.Out == nil {
		o.Out = io.Discard
	}
	return o
}

// startController installs what the Helm chart would (namespace, provider
// Secret, webhook configuration, --config file) and runs the controller
// process, reached by the API server at a loopback --webhook-url.
func (d *Demo) startController(ctx context.Context) error {
	d.step("Installing Gatehouse's configuration and starting the controller")
	none := admissionv1.SideEffectClassNone
	fail := admissionv1.Fail
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ControllerNamespace}},
		d.providerCredential(),
		&admissionv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: webhookName},
			Webhooks: []admissionv1.MutatingWebhook{{
				Name:                    "pods.gatehouse.dev",
				AdmissionReviewVersions: []string{"v1"},
				SideEffects:             &none,
				FailurePolicy:           &fail,
				ReinvocationPolicy:      ptr.To(admissionv1.IfNeededReinvocationPolicy),
				ClientConfig: admissionv1.WebhookClientConfig{Service: &admissionv1.ServiceReference{
					Namespace: ControllerNamespace, Name: "gatehouse-webhook", Path: ptr.To(controllers.WebhookPath),
				}},
				NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system", ControllerNamespace}},
					{Key: controllers.NamespaceInjectionLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"disabled"}},
				}},
				Rules: []admissionv1.RuleWithOperations{{
					Operations: []admissionv1.OperationType{admissionv1.Create},
					Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
				}},
			}},
		},
	} {
		if err := d.k8s.Create(ctx, obj); err != nil {
			return fmt.Errorf("create %T %s: %w", obj, obj.GetName(), err)
		}
	}
	credential := "clientSecretRef: {name: " + providerSecret + ", key: client-secret}"
	if d.clientKey != nil {
		credential = "clientKeyRef: {name: " + providerSecret + ", key: private-key}"
	}
	config := fmt.Sprintf(`providers:
- name: demo
  issuerURL: %s
  clientID: %s
  %s
  clientSecretMode: broker
  scopes: [openid, email, profile, groups]
  logoutRedirect: idp
  allowedNamespaces: [%s]
defaults:
  provider: demo
`, d.IdP.Issuer, clientID, credential, AppNamespace)
	configPath := filepath.Join(d.Dir, "controller.yaml")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		return err
	}
	kubeconfig, err := d.cp.Kubeconfig("gatehouse-demo-admin", "system:masters")
	if err != nil {
		return err
	}
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	health := fmt.Sprintf("127.0.0.1:%d", ports[2])
	d.BrokerURL = fmt.Sprintf("https://127.0.0.1:%d", ports[3])
	args := []string{
		"controller",
		"--config=" + configPath,
		"--kubeconfig=" + kubeconfig,
		"--namespace=" + ControllerNamespace,
		"--sidecar-image=ghcr.io/gatehouse-dev/gatehouse:demo",
		"--webhook-configuration=" + webhookName,
		fmt.Sprintf("--webhook-port=%d", ports[0]),
		fmt.Sprintf("--webhook-url=https://127.0.0.1:%d%s", ports[0], controllers.WebhookPath),
		fmt.Sprintf("--metrics-address=127.0.0.1:%d", ports[1]),
		"--health-address=" + health,
		"--leader-elect=false",
		"--broker-url=" + d.BrokerURL,
	}
	d.say("bin/gatehouse %s", shellJoin(args))
	if err := d.run("controller", filepath.Join(d.opts.Bin, "gatehouse"), args); err != nil {
		return err
	}
	if err := d.waitHTTP(ctx, "controller", "http://"+health+"/readyz", ""); err != nil {
		return err
	}
	// The controller points the webhook at itself once its certificate is
	// in place; Pods created before that would be refused.
	return d.wait(ctx, "the webhook configuration to reach the controller", func() (bool, error) {
		var wh admissionv1.MutatingWebhookConfiguration
		if err := d.k8s.Get(ctx, client.ObjectKey{Name: webhookName}, &wh); err != nil {
			return false, err
		}
		cc := wh.Webhooks[0].ClientConfig
		return cc.URL != nil && len(cc.CABundle) > 0, nil
	})
}

// deployApp creates the sample app's Deployment, Service and annotated
// Ingress, waits for the Pod the webhook injected and prints its spec.
func (d *Demo) deployApp(ctx context.Context) (*corev1.Pod, error) {
	front := "Ingress"
	if d.opts.GatewayAPI {
		front = "HTTPRoute"
	}
	d.step("Deploying the sample app %s/%s and annotating its %s", AppNamespace, AppName, front)
	labels := map[string]string{"app": AppName}
	annotations := map[string]string{
		controllers.AnnEnabled:       "true",
		controllers.AnnAllowedGroups: AllowedGroup,
	}
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: AppName, Namespace: AppNamespace, Annotations: annotations},
		Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{
			Host: Host,
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{
				Path: "/", PathType: ptr.To(networkingv1.PathTypePrefix),
				Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
					Name: AppName, Port: networkingv1.ServiceBackendPort{Number: 80},
				}},
			}}}},
		}}},
	}
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: AppNamespace}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: AppServiceAccount, Namespace: AppNamespace}},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: AppName, Namespace: AppNamespace},
			Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{
				Name: "http", Port: 80, TargetPort: intstr.FromString("http"),
			}}},
		},
		&appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: AppName, Namespace: AppNamespace},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{ServiceAccountName: AppServiceAccount, Containers: []corev1.Container{{
						Name:  "app",
						Image: "ghcr.io/gatehouse-dev/sampleapp:demo",
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(d.opts.AppPort)}}, //nolint:gosec // checked in start,
					}}},
				},
			},
		},
	}
	shown := []client.Object{ing}
	if d.opts.GatewayAPI {
		// A plain-HTTP listener for the demo's host; the route takes its
		// host from it.
		gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: AppNamespace}, Spec: gatewayv1.GatewaySpec{
			GatewayClassName: "demo",
			Listeners:        []gatewayv1.Listener{{Name: "http", Hostname: ptr.To(gatewayv1.Hostname(Host)), Port: 80, Protocol: gatewayv1.HTTPProtocolType}},
		}}
		route := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: AppName, Namespace: AppNamespace, Annotations: annotations}, Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "demo"}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
				BackendObjectReference: gatewayv1.BackendObjectReference{Name: AppName, Port: ptr.To[gatewayv1.PortNumber](80)},
			}}}}},
		}}
		shown = []client.Object{gw, route}
	}
	objs = append(objs, shown...)
	for _, obj := range objs {
		if err := d.k8s.Create(ctx, obj); err != nil {
			return nil, fmt.Errorf("create %T %s: %w", obj, obj.GetName(), err)
		}
	}
	for _, obj := range shown {
		var spec any
		switch o := obj.(type) {
		case *networkingv1.Ingress:
			spec = o.Spec
		case *gatewayv1.Gateway:
			spec = o.Spec
		case *gatewayv1.HTTPRoute:
			spec = o.Spec
		}
		out, _ := yaml.Marshal(map[string]any{"metadata": map[string]any{"annotations": obj.GetAnnotations()}, "spec": spec})
		d.say("%T %s/%s:\n%s", obj, AppNamespace, obj.GetName(), indent(string(out)))
	}

	d.step("Waiting for the Deployment's Pod, with the sidecar the webhook injected")
	var pod corev1.Pod
	err := d.wait(ctx, "an injected Pod of the sample app", func() (bool, error) {
		var pods corev1.PodList
		if err := d.k8s.List(ctx, &pods, client.InNamespace(AppNamespace), client.MatchingLabels(labels)); err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if slices.ContainsFunc(p.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == controllers.SidecarName }) {
				pod = p
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	spec, _ := yaml.Marshal(map[string]any{
		"initContainers": pod.Spec.InitContainers,
		"containers":     pod.Spec.Containers,
		"volumes":        pod.Spec.Volumes,
	})
	d.say("Pod %s/%s (what the webhook changed: the gatehouse init container, the port name, the volumes):\n%s",
		AppNamespace, pod.Name, indent(string(spec)))
	return &pod, nil
}

// runSidecar starts the sample app and the injected sidecar's command line
// next to it, with the files of the Secret the Pod mounts in a local
// directory.
func (d *Demo) runSidecar(ctx context.Context, pod *corev1.Pod) error {
	d.step("Running the injected sidecar's command line in front of the sample app")
	i := slices.IndexFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == controllers.SidecarName })
	sidecar := pod.Spec.InitContainers[i]
	d.SidecarArgs = append(slices.Clone(sidecar.Command), sidecar.Args...)

	var secret corev1.Secret
	key := client.ObjectKey{Namespace: AppNamespace}
	for _, v := range pod.Spec.Volumes {
		if v.Name == controllers.SecretVolumeName && v.Secret != nil {
			key.Name = v.Secret.SecretName
		}
	}
	err := d.wait(ctx, "the sidecar's Secret "+key.String(), func() (bool, error) {
		err := d.k8s.Get(ctx, key, &secret)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return err
	}
	mount := filepath.Join(d.Dir, "etc-gatehouse")
	if err := os.MkdirAll(mount, 0o700); err != nil {
		return err
	}
	for name, data := range secret.Data {
		if err := os.WriteFile(filepath.Join(mount, name), data, 0o600); err != nil {
			return err
		}
	}
	for name := range secret.Data {
		if name == controllers.SecretKeyClientSecret {
			return fmt.Errorf("the sidecar's Secret %s holds a client secret; the demo's provider is in broker mode", key)
		}
	}
	// The kubelet would write the projected ServiceAccount token and renew
	// it; here the demo asks the API server for one, bound to the Pod.
	tokenFile := filepath.Join(d.Dir, "broker-token")
	if err := d.writeBrokerToken(ctx, pod, tokenFile); err != nil {
		return err
	}
	renew, stopRenew := context.WithCancel(context.WithoutCancel(ctx))
	d.closers = append(d.closers, closerFunc(func() error { stopRenew(); return nil }))
	go d.renewBrokerToken(renew, pod, tokenFile)
	base := fmt.Sprintf("http://%s:%d", Host, d.opts.ProxyPort)
	d.LocalArgs = localArgs(d.SidecarArgs[1:], map[string]string{
		"listen-address":    fmt.Sprintf("127.0.0.1:%d", d.opts.ProxyPort),
		"metrics-address":   fmt.Sprintf("127.0.0.1:%d", d.opts.MetricsPort),
		"redirect-url":      base + "/_gatehouse/callback",
		"broker-token-file": tokenFile,
	}, controllers.SecretMountPath, mount)
	d.say("injected:\n    %s", shellJoin(d.SidecarArgs))
	d.say("run here as bin/gatehouse-sidecar with the Secret %s in %s (no client secret: the broker holds it),\n"+
		"    the projected ServiceAccount token in %s, listening on 127.0.0.1, and the\n"+
		"    callback on port %d (an ingress controller would serve http://%s/ on port 80):\n    %s",
		key, mount, tokenFile, d.opts.ProxyPort, Host, shellJoin(d.LocalArgs))

	app := filepath.Join(d.Dir, "sampleapp")
	build := exec.CommandContext(ctx, "go", "build", "-o", app, "./hack/sampleapp")
	build.Dir = d.opts.Root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build the sample app: %w\n%s", err, out)
	}
	appAddr := fmt.Sprintf("127.0.0.1:%d", d.opts.AppPort)
	if err := d.run("sampleapp", app, []string{
		"-listen", appAddr,
		"-jwks-url", base + "/_gatehouse/jwks.json",
		"-issuer", base,
		"-audience", "http://" + appAddr,
	}); err != nil {
		return err
	}
	if err := d.run("sidecar", filepath.Join(d.opts.Bin, "gatehouse-sidecar"), d.LocalArgs); err != nil {
		return err
	}
	return d.waitHTTP(ctx, "sidecar", fmt.Sprintf("http://127.0.0.1:%d/readyz", d.opts.MetricsPort), "identity provider: discovered")
}

// localArgs sets the flags in set (replacing or adding them, in name
// order) and moves paths under mountPath to dir; everything else stays as
// injected.
func localArgs(args []string, set map[string]string, mountPath, dir string) []string {
	out := make([]string, 0, len(args)+len(set))
	done := map[string]bool{}
	for _, a := range args {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if v, found := set[name]; ok && found {
			value, done[name] = v, true
		} else if rest, under := strings.CutPrefix(value, mountPath+"/"); ok && under {
			value = filepath.Join(dir, rest)
		} else {
			out = append(out, a)
			continue
		}
		out = append(out, "--"+name+"="+value)
	}
	for _, name := range slices.Sorted(maps.Keys(set)) {
		if !done[name] {
			out = append(out, "--"+name+"="+set[name])
		}
	}
	return out
}

// Stop ends every process in reverse order and removes Dir.
func (d *Demo) Stop() error {
	var errs []error
	for _, p := range slices.Backward(d.procs) {
		errs = append(errs, p.stop())
	}
	if d.IdP != nil {
		errs = append(errs, d.IdP.Stop())
	}
	for _, c := range d.closers {
		errs = append(errs, c.Close())
	}
	if d.cp != nil {
		errs = append(errs, d.cp.Stop())
	}
	if d.Dir != "" {
		errs = append(errs, os.RemoveAll(d.Dir))
	}
	return errors.Join(errs...)
}

// Logs returns the named process's log ("controller", "broker",
// "sampleapp", "sidecar" or "idp").
func (d *Demo) Logs(name string) string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, name+".log"))
	return string(b)
}

type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *process) stop() error {
	if err := controlplane.StopProcess(p.cmd.Process, p.done); err != nil {
		return fmt.Errorf("stop %s: %w", p.name, err)
	}
	return nil
}

// run starts a process with its output in Dir/<name>.log.
func (d *Demo) run(name, path string, args []string) error {
	log, err := os.Create(filepath.Join(d.Dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = log.Close()
		close(p.done)
	}()
	d.procs = append(d.procs, p)
	return nil
}

// waitHTTP waits until url (a process the demo started, on 127.0.0.1)
// answers 200, with want in the body if set.
func (d *Demo) waitHTTP(ctx context.Context, name, url, want string) error {
	err := d.wait(ctx, name+" to be ready", func() (bool, error) {
		for _, p := range d.procs {
			select {
			case <-p.done:
				return false, fmt.Errorf("%s exited", p.name)
			default:
			}
		}
		resp, err := http.Get(url) //nolint:gosec // the demo's own loopback address
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), want), nil
	})
	if err != nil {
		return fmt.Errorf("%w\n%s log:\n%s", err, name, tail(d.Logs(name), 30))
	}
	return nil
}

func (d *Demo) wait(ctx context.Context, what string, done func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for {
		ok, err := done()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (d *Demo) step(format string, args ...any) {
	fmt.Fprintf(d.opts.Out, "\n\033[1m==> "+format+"\033[0m\n", args...)
}

func (d *Demo) say(format string, args ...any) {
	fmt.Fprintf(d.opts.Out, "    "+format+"\n", args...)
}

// shellJoin prints a command line one argument a line, quoted for a shell.
func shellJoin(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = a
		if strings.ContainsAny(a, " '\"$\\*?;&|<>()`") {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(quoted, " \\\n      ")
}

func indent(s string) string {
	return "      " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n      ")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// portFree fails with a message saying what to do when port is taken.
func portFree(port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("port %d on 127.0.0.1 is in use: free it or choose other ports (PROXY_PORT, APP_PORT, IDP_PORT, METRICS_PORT)", port)
	}
	return l.Close()
}

// freePorts returns n ports that were free on 127.0.0.1 a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// startBroker runs gatehouse broker with the controller's config file and
// the certificate the controller issued for it, as the chart does.
func (d *Demo) startBroker(ctx context.Context) error {
	d.step("Starting the token broker, which keeps the client secret in %s", ControllerNamespace)
	var tlsSecret corev1.Secret
	err := d.wait(ctx, "the broker's certificate", func() (bool, error) {
		err := d.k8s.Get(ctx, client.ObjectKey{Namespace: ControllerNamespace, Name: brokerTLSSecret}, &tlsSecret)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return err
	}
	certs := filepath.Join(d.Dir, "broker-tls")
	if err := os.MkdirAll(certs, 0o700); err != nil {
		return err
	}
	for _, name := range []string{"tls.crt", "tls.key"} {
		if err := os.WriteFile(filepath.Join(certs, name), tlsSecret.Data[name], 0o600); err != nil {
			return err
		}
	}
	kubeconfig, err := d.cp.Kubeconfig("gatehouse-demo-broker", "system:masters")
	if err != nil {
		return err
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	listen := strings.TrimPrefix(d.BrokerURL, "https://")
	d.brokerHealth = fmt.Sprintf("127.0.0.1:%d", ports[1])
	d.BrokerMetricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[0])
	d.brokerArgs = []string{
		"broker",
		"--config=" + filepath.Join(d.Dir, "controller.yaml"),
		"--kubeconfig=" + kubeconfig,
		"--namespace=" + ControllerNamespace,
		"--tls-cert-dir=" + certs,
		"--listen-address=" + listen,
		fmt.Sprintf("--metrics-address=127.0.0.1:%d", ports[0]),
		"--health-address=" + d.brokerHealth,
	}
	d.say("bin/gatehouse %s", shellJoin(d.brokerArgs))
	return d.StartBroker(ctx)
}

// StartBroker (re)starts the token broker and waits until it is ready.
func (d *Demo) StartBroker(ctx context.Context) error {
	if err := d.run("broker", filepath.Join(d.opts.Bin, "gatehouse"), d.brokerArgs); err != nil {
		return err
	}
	d.broker = d.procs[len(d.procs)-1]
	return d.waitHTTP(ctx, "broker", "http://"+d.brokerHealth+"/readyz", "")
}

// StopBroker stops the token broker, as in an outage.
func (d *Demo) StopBroker() error {
	if d.broker == nil {
		return nil
	}
	err := d.broker.stop()
	d.procs = slices.DeleteFunc(d.procs, func(p *process) bool { return p == d.broker })
	d.broker = nil
	return err
}

// Client is the demo's client of the local control plane, as cluster
// admin.
func (d *Demo) Client() client.Client { return d.k8s }

// writeBrokerToken asks the API server for the token the kubelet would
// project into the Pod for the sidecar: the broker's audience, bound to
// the Pod, as short-lived as the injected volume asks.
func (d *Demo) writeBrokerToken(ctx context.Context, pod *corev1.Pod, path string) error {
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         []string{controllers.DefaultBrokerAudience},
		ExpirationSeconds: ptr.To[int64](controllers.BrokerTokenSeconds),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: pod.Spec.ServiceAccountName, Namespace: pod.Namespace}}
	if err := d.k8s.SubResource("token").Create(ctx, sa, tr); err != nil {
		return fmt.Errorf("request the sidecar's ServiceAccount token: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(tr.Status.Token), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// renewBrokerToken renews the token file at 80% of its life, as the
// kubelet does, until ctx ends.
func (d *Demo) renewBrokerToken(ctx context.Context, pod *corev1.Pod, path string) {
	every := controllers.BrokerTokenSeconds * time.Second * 8 / 10
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		if err := d.writeBrokerToken(ctx, pod, path); err != nil && ctx.Err() == nil {
			d.say("renewing the sidecar's ServiceAccount token: %v", err)
		}
	}
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// providerCredential is the provider's Secret in Gatehouse's namespace: the
// client secret, or with PrivateKeyJWT the private key (PKCS#8 PEM).
func (d *Demo) providerCredential() *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: providerSecret, Namespace: ControllerNamespace}}
	if d.clientKey == nil {
		s.Data = map[string][]byte{"client-secret": []byte(d.IdP.ClientSecret)}
		return s
	}
	der, _ := x509.MarshalPKCS8PrivateKey(d.clientKey)
	s.Data = map[string][]byte{"private-key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})}
	return s
}
