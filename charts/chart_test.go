package charts_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

func TestLint(t *testing.T) {
	t.Parallel()
	for _, set := range valueSets(t) {
		t.Run(set, func(t *testing.T) {
			t.Parallel()
			out, err := helm(t, "lint", "--strict", chartDir, "--namespace", releaseNS, "-f", valuesFile(set))
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// TestGolden compares helm template's output for each value set with
// testdata/<set>.golden.yaml; -update rewrites them.
func TestGolden(t *testing.T) {
	t.Parallel()
	for _, set := range valueSets(t) {
		t.Run(set, func(t *testing.T) {
			t.Parallel()
			out, _ := render(t, set)
			golden := filepath.Join("testdata", set+".golden.yaml")
			if *update {
				if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./charts -run TestGolden -update)", err)
			}
			if diff := cmp.Diff(string(want), out); diff != "" {
				t.Errorf("helm template with %s differs from %s (-want +got); if the change is intended, run go test ./charts -run TestGolden -update and review the diff:\n%s",
					valuesFile(set), golden, diff)
			}
		})
	}
}

// TestSchemaRejects: mistakes in values fail helm template with a message
// that names the value.
func TestSchemaRejects(t *testing.T) {
	t.Parallel()
	const provider = "providers:\n  - {name: corp, issuerURL: https://login.example.com, clientID: gatehouse}\n"
	tests := []struct {
		name   string
		values string
		want   string
	}{
		{"typo at the top", provider + "replica: 2\n", "additional properties 'replica' not allowed"},
		{"typo in a provider", "providers:\n  - {name: corp, issuerUrl: https://login.example.com, clientID: gatehouse}\n",
			"at '/providers/0': additional properties 'issuerUrl' not allowed"},
		{"typo in a nested key", provider + "webhook:\n  timeoutSecond: 5\n", "additional properties 'timeoutSecond' not allowed"},
		{"typo in the shorthand", "provider:\n  issuerURL: https://login.example.com\n  clientId: gatehouse\n", "additional properties 'clientId' not allowed"},
		{"secret ref without key", "providers:\n  - {name: corp, issuerURL: https://login.example.com, clientID: g, clientSecretRef: {name: s}}\n",
			"/providers/0/clientSecretRef': missing property 'key'"},
		{"plain http issuer", "providers:\n  - {name: corp, issuerURL: http://login.example.com, clientID: gatehouse}\n", "/providers/0/issuerURL"},
		{"redis URL", "providers:\n  - {name: corp, issuerURL: https://login.example.com, clientID: g, sessionStore: {redisURL: 'http://redis:6379'}}\n",
			"/providers/0/sessionStore/redisURL"},
		{"scopes without openid", "providers:\n  - {name: corp, issuerURL: https://login.example.com, clientID: g, scopes: [email]}\n", "/providers/0/scopes"},
		{"digest", provider + "image:\n  digest: latest\n", "/image/digest"},
		{"timeout", provider + "webhook:\n  timeoutSeconds: 60\n", "/webhook/timeoutSeconds"},
		{"log level", provider + "logLevel: verbose\n", "/logLevel"},
		{"no provider", "{}\n", "no identity provider: set provider.issuerURL"},
		{"shorthand without client id", "provider:\n  issuerURL: https://login.example.com\n", "provider.clientID: required"},
		{"unknown default provider", provider + "defaults:\n  provider: nope\n", `defaults.provider: "nope" is not a configured provider (known: corp)`},
		{"provider twice", provider + "provider:\n  name: corp\n  issuerURL: https://login.example.com\n  clientID: x\n", `the name "corp" is used twice`},
		// The selector labels, which the Services and the
		// PodDisruptionBudget select the controller by. (Refused by
		// property, not propertyNames, whose errors helm reports at a
		// random location.)
		{"pod label app.kubernetes.io/name", provider + "podLabels:\n  app.kubernetes.io/name: shop\n", "at '/podLabels/app.kubernetes.io~1name'"},
		{"pod label app.kubernetes.io/instance", provider + "podLabels:\n  app.kubernetes.io/instance: shop\n", "at '/podLabels/app.kubernetes.io~1instance'"},
		{"pod label app.kubernetes.io/component", provider + "podLabels:\n  app.kubernetes.io/component: web\n", "at '/podLabels/app.kubernetes.io~1component'"},
		// The controller finds its requirement by key and operator; a
		// second one would be mistaken for it.
		{"the controller's namespace requirement", provider + "webhook:\n  namespaceSelector:\n    matchExpressions:\n      - {key: kubernetes.io/metadata.name, operator: In, values: [shop]}\n",
			"at '/webhook/namespaceSelector/matchExpressions/0'"},
		{"typo in resource bounds", provider + "defaults:\n  sidecar:\n    resourceBounds:\n      maximum: {memory: 1Gi}\n", "additional properties 'maximum' not allowed"},
		{"preStop sleep", provider + "webhook:\n  preStopSleepSeconds: -1\n", "/webhook/preStopSleepSeconds"},
		{"typo in priorityClass", provider + "priorityClass:\n  crate: true\n", "additional properties 'crate' not allowed"},
		{"system priority value", provider + "priorityClass:\n  create: true\n  value: 2000000000\n", "/priorityClass/value"},
		{"priority class name", provider + "priorityClassName: Platform_Critical\n", "/priorityClassName"},
		{"client secret mode", "providers:\n  - {name: corp, issuerURL: https://login.example.com, clientID: g, clientSecretMode: vault}\n", "/providers/0/clientSecretMode"},
		{"broker mode without the broker", "providers:\n  - {name: corp, issuerURL: https://login.example.com, clientID: g, clientSecretRef: {name: s, key: k}, clientSecretMode: broker}\nbroker:\n  enabled: false\n",
			`"corp" has clientSecretMode broker, which needs broker.enabled`},
		{"client key without its key", "providers:\n  - {name: corp, issuerURL: https://login.example.com, clientID: g, clientKeyRef: {name: k}}\n",
			"/providers/0/clientKeyRef': missing property 'key'"},
		{"client key and secret", "providers:\n  - {name: corp, issuerURL: https://login.example.com, clientID: g, clientKeyRef: {name: k, key: tls.key}, clientSecretRef: {name: s, key: k}}\n",
			`"corp" has clientKeyRef and a client secret`},
		{"client key and the shorthand's secret", "provider:\n  issuerURL: https://login.example.com\n  clientID: g\n  clientSecret: {name: s}\n  clientKeyRef: {name: k, key: tls.key}\n",
			`"default" has clientKeyRef and a client secret`},
		{"client key in copy mode", "providers:\n  - {name: corp, issuerURL: https://login.example.com, clientID: g, clientKeyRef: {name: k, key: tls.key}, clientSecretMode: copy}\n",
			`"corp" has clientKeyRef, which needs clientSecretMode broker and broker.enabled`},
		{"client key without the broker", "providers:\n  - {name: corp, issuerURL: https://login.example.com, clientID: g, clientKeyRef: {name: k, key: tls.key}}\nbroker:\n  enabled: false\n",
			`"corp" has clientKeyRef, which needs clientSecretMode broker and broker.enabled`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(file, []byte(tc.values), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := helm(t, "template", releaseName, chartDir, "--namespace", releaseNS, "-f", file)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("helm template with\n%s\nerr = %v\nwant an error containing %q", tc.values, err, tc.want)
			}
		})
	}
}

// TestNotes: what helm install prints names the namespaces the webhook
// never covers, webhook.namespaceSelector.matchExpressions included, and
// warns when the release namespace is default, whose apps cannot be
// protected.
func TestNotes(t *testing.T) {
	t.Parallel()
	const selector = `and namespaces not matching the label selector "example.com/tenant".`
	tests := []struct {
		name, set, namespace string
		want, dontWant       []string
	}{
		{"minimal", "minimal", releaseNS,
			[]string{
				"The webhook fails closed (failurePolicy: Fail), but only in the namespaces\nGatehouse protects",
				"It never covers kube-system,\ngatehouse-system or namespaces labelled gatehouse.dev/injection=disabled.\n",
			},
			[]string{"WARNING", "not matching"}},
		{"namespace selector", "production", releaseNS,
			[]string{"It never covers kube-system,\ngatehouse-system, monitoring, cert-manager, namespaces labelled gatehouse.dev/injection=disabled\n" + selector},
			[]string{"WARNING"}},
		{"private key", "private-key", releaseNS,
			[]string{
				"default: https://login.example.com, client gatehouse, private key (private_key_jwt) in Secret gatehouse-oidc-key (key tls.key)\n",
				"kubectl -n " + releaseNS + " create secret generic gatehouse-partners-key --from-file=tls.key=<PEM private key file>\n",
			},
			[]string{"public client", "<client secret>"}},
		{"default namespace", "minimal", "default",
			[]string{"WARNING: the webhook never covers the release namespace, so apps in namespace\ndefault cannot be protected.", "--namespace gatehouse-system"},
			nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := helm(t, "install", releaseName, chartDir, "--dry-run=client", "--namespace", tc.namespace, "-f", valuesFile(tc.set))
			if err != nil {
				t.Fatal(err)
			}
			_, notes, ok := strings.Cut(out, "\nNOTES:\n")
			if !ok {
				t.Fatalf("helm install --dry-run printed no NOTES:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(notes, w) {
					t.Errorf("NOTES lack %q:\n%s", w, notes)
				}
			}
			for _, w := range tc.dontWant {
				if strings.Contains(notes, w) {
					t.Errorf("NOTES hold %q:\n%s", w, notes)
				}
			}
		})
	}
}

// TestSchemaMatchesFileConfig: the schema's providers (and the provider
// shorthand) and defaults take exactly the keys of the controller's
// --config file (controllers.FileConfig), and refuse others, so a field
// added to the controller is not refused by the chart and the chart never
// renders a key the controller's strict parser refuses.
func TestSchemaMatchesFileConfig(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	props := schema["properties"].(map[string]any)
	items := props["providers"].(map[string]any)["items"].(map[string]any)
	checkSchemaObject(t, "providers[]", items, reflect.TypeFor[controllers.Provider](), nil)
	checkSchemaObject(t, "provider", props["provider"].(map[string]any), reflect.TypeFor[controllers.Provider](),
		map[string]string{"clientSecretRef": "clientSecret"})
	checkSchemaObject(t, "defaults", props["defaults"].(map[string]any), reflect.TypeFor[controllers.Defaults](), nil)
}

// checkSchemaObject compares the properties of a schema object with the
// JSON fields of typ (renamed as rename says), recursing into the structs
// of the controllers package.
func checkSchemaObject(t *testing.T, where string, node map[string]any, typ reflect.Type, rename map[string]string) {
	t.Helper()
	if node["additionalProperties"] != false {
		t.Errorf("schema of %s allows unknown keys; set additionalProperties: false", where)
	}
	props, _ := node["properties"].(map[string]any)
	want := map[string]reflect.Type{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		if r, ok := rename[name]; ok {
			name = r
		}
		want[name] = f.Type
	}
	for name, ft := range want {
		sub, ok := props[name].(map[string]any)
		if !ok {
			t.Errorf("schema of %s lacks %q, which the controller's config file takes", where, name)
			continue
		}
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft.PkgPath() == typ.PkgPath() {
			checkSchemaObject(t, where+"."+name, sub, ft, nil)
		}
	}
	for name := range props {
		if _, ok := want[name]; !ok {
			t.Errorf("schema of %s takes %q, which the controller's config file does not", where, name)
		}
	}
}

// TestWiring checks, for every value set, that the rendered objects fit
// each other and the controller's conventions: names passed as flags
// exist, Services and probes reach the ports the flags open, the config
// file passes the controller's own strict parser, the webhook's Secret is
// the one the controller (or cert-manager) writes.
func TestWiring(t *testing.T) {
	t.Parallel()
	for _, set := range valueSets(t) {
		t.Run(set, func(t *testing.T) {
			t.Parallel()
			_, r := render(t, set)
			checkWiring(t, r)
		})
	}
}

func checkWiring(t *testing.T, r rendered) {
	for _, o := range r.objs {
		switch o.GetKind() {
		case "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration", "PriorityClass":
			if o.GetNamespace() != "" {
				t.Errorf("cluster-scoped %s %s has namespace %q", o.GetKind(), o.GetName(), o.GetNamespace())
			}
		default:
			if o.GetNamespace() != r.namespace {
				t.Errorf("%s %s is in namespace %q, want the release's %q", o.GetKind(), o.GetName(), o.GetNamespace(), r.namespace)
			}
		}
	}
	hooks := r.only(true) // helm test's objects
	r = r.only(false)     // what helm install creates
	r, broker := r.split()

	dep := as[appsv1.Deployment](t, r.get(t, "Deployment", ""))
	tmpl := dep.Spec.Template
	podLabels := labels.Set(tmpl.Labels)
	if !selects(dep.Spec.Selector, podLabels) {
		t.Errorf("Deployment selector %v does not select its Pods %v", dep.Spec.Selector, podLabels)
	}
	if ru := dep.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update %+v: want maxUnavailable 0, so an upgrade never leaves no ready webhook", ru)
	}
	ctr := containerNamed(t, tmpl.Spec.Containers, "controller")
	if !slices.Equal(ctr.Command, []string{"/usr/local/bin/gatehouse"}) || len(ctr.Args) == 0 || ctr.Args[0] != "controller" {
		t.Fatalf("controller runs %q %q, want /usr/local/bin/gatehouse controller ...", ctr.Command, ctr.Args)
	}
	flags := parseFlags(t, ctr.Args[1:])
	if v, ok := flags["leader-elect"]; !ok || (v != "" && v != "true") {
		t.Errorf("controller args lack --leader-elect: %q", ctr.Args)
	}

	// Image and environment.
	env := map[string]corev1.EnvVar{}
	for _, e := range ctr.Env {
		env[e.Name] = e
	}
	if env["GATEHOUSE_IMAGE"].Value != ctr.Image {
		t.Errorf("GATEHOUSE_IMAGE %q, want the controller's image %q", env["GATEHOUSE_IMAGE"].Value, ctr.Image)
	}
	if ref := env["POD_NAMESPACE"].ValueFrom; ref == nil || ref.FieldRef == nil || ref.FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("POD_NAMESPACE is not the Pod's namespace: %+v", env["POD_NAMESPACE"])
	}

	// The --config file: a ConfigMap mounted at its directory, with a key
	// named like it, that the controller's own strict parser accepts.
	cm := as[corev1.ConfigMap](t, r.get(t, "ConfigMap", releaseName+"-config"))
	vol := volumeAt(t, tmpl.Spec, ctr, path.Dir(flags["config"]))
	if vol.ConfigMap == nil || vol.ConfigMap.Name != cm.Name {
		t.Errorf("--config=%s is not in ConfigMap %s: volume %+v", flags["config"], cm.Name, vol)
	}
	file, err := controllers.ParseFile([]byte(cm.Data[path.Base(flags["config"])]))
	if err != nil {
		t.Errorf("the controller refuses the rendered config: %v\n%s", err, cm.Data[path.Base(flags["config"])])
	} else if _, ok := file.Provider(file.Defaults.Provider); !ok {
		t.Errorf("defaults.provider %q is not a provider, so gatehouse.dev/enabled alone would not work", file.Defaults.Provider)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(tmpl.Annotations["checksum/config"]) {
		t.Errorf("Pod template lacks the config checksum that rolls the controller on a config change: %v", tmpl.Annotations)
	}
	volumeAt(t, tmpl.Spec, ctr, "/tmp") // the self-made certificate's temporary directory

	// Ports: the flags' ports are the container's named ports, which the
	// Services and probes use.
	portOf := func(addr string) int32 {
		_, p, err := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(p)
		if err != nil || n == 0 {
			t.Fatalf("address %q has no port", addr)
		}
		return int32(n)
	}
	webhookPort, _ := strconv.Atoi(flags["webhook-port"])
	containerPorts := map[string]int32{}
	for _, p := range ctr.Ports {
		containerPorts[p.Name] = p.ContainerPort
	}
	for name, want := range map[string]int32{"webhook": int32(webhookPort), "metrics": portOf(flags["metrics-address"]), "health": portOf(flags["health-address"])} {
		if containerPorts[name] != want {
			t.Errorf("container port %q is %d, want %d from the flags %q", name, containerPorts[name], want, ctr.Args)
		}
	}
	for probe, want := range map[*corev1.Probe]string{ctr.ReadinessProbe: "/readyz", ctr.LivenessProbe: "/healthz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want || probe.HTTPGet.Port.String() != "health" {
			t.Errorf("probe %+v, want GET %s on the health port", probe, want)
		}
	}

	// Shutdown: the preStop sleep and the manager's graceful shutdown fit
	// in the grace period.
	grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if tmpl.Spec.TerminationGracePeriodSeconds != nil {
		grace = *tmpl.Spec.TerminationGracePeriodSeconds
	}
	if sleep := preStopSleep(ctr); grace < sleep+managerShutdownSeconds {
		t.Errorf("terminationGracePeriodSeconds %d does not cover the preStop sleep (%ds) and the manager's shutdown (%ds)", grace, sleep, managerShutdownSeconds)
	}
	// The chart's PriorityClass, when it makes one, is the Pods'.
	if pcs := r.all("PriorityClass"); len(pcs) > 0 {
		pc := as[schedulingv1.PriorityClass](t, r.get(t, "PriorityClass", ""))
		if tmpl.Spec.PriorityClassName != pc.Name || pc.GlobalDefault || pc.Value > 1_000_000_000 {
			t.Errorf("PriorityClass %s (value %d, globalDefault %t), Pods' priorityClassName %q; want the Pods' own, a user class, not the default",
				pc.Name, pc.Value, pc.GlobalDefault, tmpl.Spec.PriorityClassName)
		}
	}

	webhookSvc := as[corev1.Service](t, r.get(t, "Service", flags["webhook-service"]))
	var metricsSvc *corev1.Service
	for _, u := range r.all("Service") {
		svc := as[corev1.Service](t, u)
		if !selects(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, podLabels) {
			t.Errorf("Service %s selects %v, not the controller's Pods %v", svc.Name, svc.Spec.Selector, podLabels)
		}
		if svc.Name != webhookSvc.Name {
			metricsSvc = svc
		}
	}
	if len(webhookSvc.Spec.Ports) != 1 || webhookSvc.Spec.Ports[0].Port != 443 || webhookSvc.Spec.Ports[0].TargetPort.String() != "webhook" {
		t.Errorf("webhook Service ports %+v, want 443 to the container port named webhook", webhookSvc.Spec.Ports)
	}
	if metricsSvc == nil || len(metricsSvc.Spec.Ports) != 1 || metricsSvc.Spec.Ports[0].TargetPort.String() != "metrics" {
		t.Fatalf("metrics Service %+v, want one port to the container port named metrics", metricsSvc)
	}

	// The webhook configuration the controller keeps current.
	mwc := as[admissionregistrationv1.MutatingWebhookConfiguration](t, r.get(t, "MutatingWebhookConfiguration", flags["webhook-configuration"]))
	for _, wh := range mwc.Webhooks {
		want := admissionregistrationv1.ServiceReference{Name: webhookSvc.Name, Namespace: r.namespace, Path: ptrTo(controllers.WebhookPath), Port: ptrTo[int32](443)}
		if diff := cmp.Diff(&want, wh.ClientConfig.Service); diff != "" || wh.ClientConfig.URL != nil {
			t.Errorf("webhook %s calls %+v (-want +got):\n%s", wh.Name, wh.ClientConfig, diff)
		}
		if len(wh.ClientConfig.CABundle) != 0 {
			t.Errorf("webhook %s has a caBundle in the chart; the controller or cert-manager owns it", wh.Name)
		}
		checkWebhookScope(t, wh, r.namespace)
	}

	// The webhook's certificate Secret: "<--webhook-service>-tls", written
	// by the controller or by cert-manager.
	secretName := flags["webhook-service"] + "-tls"
	// The controller gets and patches its webhook configuration, by name,
	// in every mode: it keeps the namespaceSelector current, and the
	// caBundle unless cert-manager's cainjector does.
	rbacCreated := len(r.all("ClusterRole")) > 0
	wantMWCRule := rbacv1.PolicyRule{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"},
		ResourceNames: []string{mwc.Name}, Verbs: []string{"get", "patch"}}
	if dir, ok := flags["webhook-cert-dir"]; ok {
		cert := r.get(t, "Certificate", "")
		if got, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName"); got != secretName {
			t.Errorf("Certificate writes Secret %q, want %q", got, secretName)
		}
		v := volumeAt(t, tmpl.Spec, ctr, dir)
		if v.Secret == nil || v.Secret.SecretName != secretName {
			t.Errorf("--webhook-cert-dir=%s is not Secret %s: %+v", dir, secretName, v)
		}
		dnsNames, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
		if want := webhookSvc.Name + "." + r.namespace + ".svc"; !slices.Contains(dnsNames, want) {
			t.Errorf("Certificate names %q, not the webhook Service's %s", dnsNames, want)
		}
		if got, want := mwc.Annotations["cert-manager.io/inject-ca-from"], r.namespace+"/"+cert.GetName(); got != want {
			t.Errorf("cert-manager.io/inject-ca-from is %q, want %q", got, want)
		}
		issuerName, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "name")
		if issuers := r.all("Issuer"); len(issuers) > 0 && (len(issuers) != 1 || issuers[0].GetName() != issuerName) {
			t.Errorf("Certificate's issuer %q is not the rendered Issuer", issuerName)
		}
	} else if len(r.all("Certificate")) != 0 {
		t.Error("a Certificate without --webhook-cert-dir")
	}
	if rbacCreated {
		clusterRole := as[rbacv1.ClusterRole](t, r.get(t, "ClusterRole", ""))
		mwcRules := slices.DeleteFunc(slices.Clone(clusterRole.Rules), func(rule rbacv1.PolicyRule) bool {
			return !slices.Contains(rule.Resources, "mutatingwebhookconfigurations")
		})
		if diff := cmp.Diff([]rbacv1.PolicyRule{wantMWCRule}, mwcRules); diff != "" {
			t.Errorf("webhook configuration rule (-want +got):\n%s", diff)
		}
	}

	// helm test: the Service's URL, never the controller's Pods' labels,
	// and the caBundle of the webhook configuration (or, without the
	// chart's RBAC, the CA of the webhook's Secret).
	testPod := as[corev1.Pod](t, hooks.get(t, "Pod", ""))
	for _, u := range r.all("Service") {
		if selects(&metav1.LabelSelector{MatchLabels: as[corev1.Service](t, u).Spec.Selector}, labels.Set(testPod.Labels)) {
			t.Errorf("Service %s selects the helm test Pod", u.GetName())
		}
	}
	check := containerNamed(t, testPod.Spec.Containers, "webhook-check")
	checkFlags := parseFlags(t, check.Args[1:])
	if want := "https://" + webhookSvc.Name + "." + r.namespace + ".svc:443" + controllers.WebhookPath; check.Args[0] != "webhook-check" || checkFlags["url"] != want {
		t.Errorf("helm test runs %q, want webhook-check --url=%s", check.Args, want)
	}
	if check.Image != ctr.Image || !slices.Equal(check.Command, ctr.Command) {
		t.Errorf("helm test runs %s %q, want the controller's %s %q", check.Image, check.Command, ctr.Image, ctr.Command)
	}
	checkTestHooks(t, hooks, testPod, check, checkFlags, mwc.Name, secretName, rbacCreated && len(r.all("ServiceAccount")) > 0)

	// Identity and RBAC bindings.
	sa := tmpl.Spec.ServiceAccountName
	if len(r.all("ServiceAccount")) > 0 {
		r.get(t, "ServiceAccount", sa)
	}
	if rbacCreated {
		for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
			b := as[rbacv1.RoleBinding](t, r.get(t, kind, ""))
			r.get(t, b.RoleRef.Kind, b.RoleRef.Name)
			want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: r.namespace}}
			if diff := cmp.Diff(want, b.Subjects); diff != "" {
				t.Errorf("%s subjects (-want +got):\n%s", kind, diff)
			}
		}
	} else if n := len(r.all("Role")) + len(r.all("RoleBinding")) + len(r.all("ClusterRoleBinding")); n > 0 {
		t.Errorf("%d RBAC objects without a ClusterRole; want all or none", n)
	}

	// Availability.
	pdbs := r.all("PodDisruptionBudget")
	switch replicas := *dep.Spec.Replicas; {
	case replicas > 1 && len(pdbs) == 1:
		pdb := as[policyv1.PodDisruptionBudget](t, pdbs[0])
		if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || !selects(pdb.Spec.Selector, podLabels) {
			t.Errorf("PodDisruptionBudget %+v, want minAvailable 1 of the controller's Pods", pdb.Spec)
		}
	case replicas <= 1 && len(pdbs) == 0:
	default:
		t.Errorf("%d replicas and %d PodDisruptionBudgets; want one exactly when replicas > 1", replicas, len(pdbs))
	}

	checkBroker(t, broker, flags, file, vol)

	// Prometheus Operator.
	for _, sm := range r.all("ServiceMonitor") {
		var sel metav1.LabelSelector
		raw, _, _ := unstructured.NestedMap(sm.Object, "spec", "selector")
		if err := yamlRoundTrip(raw, &sel); err != nil || !selects(&sel, labels.Set(metricsSvc.Labels)) || selects(&sel, labels.Set(webhookSvc.Labels)) {
			t.Errorf("ServiceMonitor selects %+v, want the metrics Service only (%v)", sel, err)
		}
		endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		if len(endpoints) != 1 || endpoints[0].(map[string]any)["port"] != metricsSvc.Spec.Ports[0].Name {
			t.Errorf("ServiceMonitor endpoints %v, want the metrics Service's port %q", endpoints, metricsSvc.Spec.Ports[0].Name)
		}
	}

	// The restricted Pod Security Standard (the dry run checks it too).
	for _, p := range []struct {
		spec corev1.PodSpec
		c    *corev1.Container
	}{{tmpl.Spec, ctr}, {testPod.Spec, check}} {
		psc, sc := p.spec.SecurityContext, p.c.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault ||
			sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("container %s is not restricted: pod %+v, container %+v", p.c.Name, psc, sc)
		}
	}
}

// checkTestHooks checks helm test's objects. With the chart's RBAC and
// ServiceAccounts (withRBAC), the test Pod runs as a ServiceAccount of its
// own that may only get the webhook configuration, and trusts only its
// caBundle; all of them are test hooks, the RBAC created before the Pod.
// Otherwise the Pod alone trusts ca.crt of the webhook's Secret.
func checkTestHooks(t *testing.T, hooks rendered, pod *corev1.Pod, check *corev1.Container, flags map[string]string, mwcName, secretName string, withRBAC bool) {
	t.Helper()
	weight := func(o metav1.Object) int {
		s, ok := o.GetAnnotations()["helm.sh/hook-weight"]
		if !ok {
			return 0
		}
		w, err := strconv.Atoi(s)
		if err != nil {
			t.Errorf("%s: helm.sh/hook-weight: %v", o.GetName(), err)
		}
		return w
	}
	for _, o := range hooks.objs {
		a := o.GetAnnotations()
		if a["helm.sh/hook"] != "test" || a["helm.sh/hook-delete-policy"] != "before-hook-creation,hook-succeeded" {
			t.Errorf("hook %s %s has annotations %v, want a test hook deleted before the next run and once it passed", o.GetKind(), o.GetName(), a)
		}
		if o.GetKind() != "Pod" && weight(o) >= weight(pod) {
			t.Errorf("hook %s %s has weight %d, not below the test Pod's %d: helm would not create it first", o.GetKind(), o.GetName(), weight(o), weight(pod))
		}
	}
	if !withRBAC {
		if _, ok := flags["webhook-configuration"]; ok || len(hooks.objs) != 1 {
			t.Errorf("without the chart's RBAC helm test runs %q with %d hooks; want --ca-file and the Pod alone", check.Args, len(hooks.objs))
		}
		if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
			t.Error("the helm test Pod mounts a token it does not use")
		}
		caVol := volumeAt(t, pod.Spec, check, path.Dir(flags["ca-file"]))
		wantCA := &corev1.SecretVolumeSource{SecretName: secretName, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: path.Base(flags["ca-file"])}}}
		if diff := cmp.Diff(wantCA, caVol.Secret); diff != "" {
			t.Errorf("helm test's CA volume (-want +got): only ca.crt of the webhook's Secret:\n%s", diff)
		}
		return
	}
	if _, ok := flags["ca-file"]; ok || flags["webhook-configuration"] != mwcName {
		t.Errorf("helm test runs %q, want --webhook-configuration=%s and no --ca-file", check.Args, mwcName)
	}
	if len(pod.Spec.Volumes) != 0 || len(check.VolumeMounts) != 0 {
		t.Errorf("helm test mounts %+v; it needs no volume besides its token", pod.Spec.Volumes)
	}
	if pod.Spec.AutomountServiceAccountToken == nil || !*pod.Spec.AutomountServiceAccountToken {
		t.Error("the helm test Pod does not mount its ServiceAccount's token")
	}
	sa := as[corev1.ServiceAccount](t, hooks.get(t, "ServiceAccount", pod.Spec.ServiceAccountName))
	if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("helm test's ServiceAccount %s lends its token to any Pod; want automountServiceAccountToken: false", sa.Name)
	}
	role := as[rbacv1.ClusterRole](t, hooks.get(t, "ClusterRole", ""))
	want := []rbacv1.PolicyRule{{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"},
		ResourceNames: []string{mwcName}, Verbs: []string{"get"}}}
	if diff := cmp.Diff(want, role.Rules); diff != "" {
		t.Errorf("helm test's ClusterRole %s grants more or less than get on the webhook configuration (-want +got):\n%s", role.Name, diff)
	}
	b := as[rbacv1.ClusterRoleBinding](t, hooks.get(t, "ClusterRoleBinding", ""))
	wantBinding := rbacv1.ClusterRoleBinding{RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: hooks.namespace}}}
	if diff := cmp.Diff(wantBinding.RoleRef, b.RoleRef); diff != "" {
		t.Errorf("helm test's ClusterRoleBinding roleRef (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantBinding.Subjects, b.Subjects); diff != "" {
		t.Errorf("helm test's ClusterRoleBinding subjects (-want +got):\n%s", diff)
	}
	if len(hooks.objs) != 4 {
		t.Errorf("%d helm test hooks, want the Pod, its ServiceAccount, ClusterRole and ClusterRoleBinding", len(hooks.objs))
	}
}

// TestRBACMatchesGeneratedRole: the chart grants exactly what
// config/rbac/role.yaml (generated from the code's markers) grants,
// narrowed only where the code allows: the Lease in the release namespace
// and the webhook configuration by name. With cert-manager too, since the
// controller patches the webhook's namespaceSelector.
func TestRBACMatchesGeneratedRole(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../config/rbac/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var generated rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict(raw, &generated); err != nil {
		t.Fatal(err)
	}
	for _, set := range []string{"minimal", "cert-manager"} {
		t.Run(set, func(t *testing.T) {
			t.Parallel()
			_, r := render(t, set)
			r, _ = r.only(false).split()
			checkGrants(t, r, grants(generated.Rules))
		})
	}
}

// checkGrants checks that the release's roles grant exactly want, the
// ClusterRole cluster-wide except on the webhook configuration, and the
// Role only the leader-election Lease.
func checkGrants(t *testing.T, r rendered, want map[grant][]string) {
	t.Helper()
	clusterRole := as[rbacv1.ClusterRole](t, r.get(t, "ClusterRole", ""))
	role := as[rbacv1.Role](t, r.get(t, "Role", ""))
	mwcName := r.get(t, "MutatingWebhookConfiguration", "").GetName()

	got := map[grant]string{} // how the chart grants it
	for g, names := range grants(clusterRole.Rules) {
		switch {
		case len(names) == 0:
			got[g] = "cluster-wide"
		case g.resource == "mutatingwebhookconfigurations" && slices.Equal(names, []string{mwcName}):
			got[g] = "by name"
		default:
			t.Errorf("ClusterRole grants %v only on %q", g, names)
		}
	}
	for g, names := range grants(role.Rules) {
		if (g.resource != "leases" && g.resource != "configmaps") || len(names) != 0 {
			t.Errorf("Role %s grants %v (%q); only leader election's Lease and the broker registry belong there", role.Name, g, names)
		}
		got[g] = "in the release namespace"
	}
	for g := range want {
		if _, ok := got[g]; !ok {
			t.Errorf("the chart does not grant %v, which config/rbac/role.yaml does (the code needs it)", g)
		}
	}
	for g, how := range got {
		if _, ok := want[g]; !ok {
			t.Errorf("the chart grants %v (%s), which the controller does not need here (config/rbac/role.yaml)", g, how)
		}
	}
}

type grant struct{ group, resource, verb string }

func grants(rules []rbacv1.PolicyRule) map[grant][]string {
	out := map[grant][]string{}
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out[grant{g, res, v}] = append(out[grant{g, res, v}], r.ResourceNames...)
				}
			}
		}
	}
	return out
}

// TestWebhookMatchesGenerated: the chart's webhook is
// config/webhook/manifests.yaml (generated from the code's marker) with the
// patches config/webhook/kustomization.yaml applies (its scope and
// matchConditions, which the marker cannot express); only where it calls
// and its timeout differ.
func TestWebhookMatchesGenerated(t *testing.T) {
	t.Parallel()
	generated := kustomizedWebhook(t, "../config/webhook")
	_, r := render(t, "minimal")
	chart := as[admissionregistrationv1.MutatingWebhookConfiguration](t, r.get(t, "MutatingWebhookConfiguration", ""))
	if len(chart.Webhooks) != len(generated.Webhooks) {
		t.Fatalf("chart has %d webhooks, the generated manifest %d", len(chart.Webhooks), len(generated.Webhooks))
	}
	for i := range chart.Webhooks {
		got, want := chart.Webhooks[i].DeepCopy(), generated.Webhooks[i].DeepCopy()
		if got.TimeoutSeconds == nil || *got.TimeoutSeconds != 3 {
			t.Errorf("webhook %s timeoutSeconds %v, want the default 3", got.Name, got.TimeoutSeconds)
		}
		if got.ClientConfig.Service == nil || want.ClientConfig.Service == nil || *got.ClientConfig.Service.Path != *want.ClientConfig.Service.Path {
			t.Errorf("webhook %s path differs: chart %+v, generated %+v", got.Name, got.ClientConfig, want.ClientConfig)
		}
		got.ClientConfig, want.ClientConfig = admissionregistrationv1.WebhookClientConfig{}, admissionregistrationv1.WebhookClientConfig{}
		got.TimeoutSeconds, want.TimeoutSeconds = nil, nil
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("webhook %s differs from config/webhook (-generated +chart):\n%s", got.Name, diff)
		}
	}
}

// kustomizedWebhook is the MutatingWebhookConfiguration of the kustomize
// directory dir: its resource with its JSON patches applied (add and
// replace of object fields, all this directory uses). Its namespace is
// gatehouse-system, as releaseNS.
func kustomizedWebhook(t *testing.T, dir string) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	var kust struct {
		Resources []string
		Patches   []struct {
			Path   string
			Target struct{ Kind string }
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, &kust); err != nil || len(kust.Resources) != 1 {
		t.Fatalf("%s/kustomization.yaml: %v, resources %q; want the one generated manifest", dir, err, kust.Resources)
	}
	if raw, err = os.ReadFile(filepath.Join(dir, kust.Resources[0])); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for _, p := range kust.Patches {
		if p.Target.Kind != "MutatingWebhookConfiguration" {
			t.Fatalf("patch %s targets %q", p.Path, p.Target.Kind)
		}
		if raw, err = os.ReadFile(filepath.Join(dir, p.Path)); err != nil {
			t.Fatal(err)
		}
		var ops []struct {
			Op, Path string
			Value    any
		}
		if err := yaml.UnmarshalStrict(raw, &ops); err != nil {
			t.Fatalf("%s: %v", p.Path, err)
		}
		for _, op := range ops {
			if op.Op != "add" && op.Op != "replace" {
				t.Fatalf("%s: op %q at %s; only add and replace are read here", p.Path, op.Op, op.Path)
			}
			if err := setField(doc, op.Path, op.Value); err != nil {
				t.Fatalf("%s: %s %s: %v", p.Path, op.Op, op.Path, err)
			}
		}
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := yamlRoundTrip(doc, &mwc); err != nil {
		t.Fatalf("%s patched: %v", dir, err)
	}
	return &mwc
}

// setField sets the object field at the JSON pointer path (RFC 6901)
// inside doc; the path's parents must exist.
func setField(doc any, pointer string, v any) error {
	tokens := strings.Split(strings.TrimPrefix(pointer, "/"), "/")
	for i, tok := range tokens {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		last := i == len(tokens)-1
		switch node := doc.(type) {
		case map[string]any:
			if last {
				node[tok] = v
				return nil
			}
			doc = node[tok]
		case []any:
			n, err := strconv.Atoi(tok)
			if err != nil || n < 0 || n >= len(node) || last {
				return fmt.Errorf("element %q of a list of %d: only fields of list elements can be set", tok, len(node))
			}
			doc = node[n]
		default:
			return fmt.Errorf("no object or list at %q", tok)
		}
	}
	return errors.New("empty path")
}

// protectedNamespacesPlaceholder is the one value of the webhook's
// `kubernetes.io/metadata.name In` requirement until the controller lists
// the namespaces Gatehouse protects.
const protectedNamespacesPlaceholder = "gatehouse_none"

// managerShutdownSeconds is controller-runtime's default graceful shutdown
// timeout, which the controller keeps.
const managerShutdownSeconds = 30

var wantMatchConditions = []admissionregistrationv1.MatchCondition{
	{Name: "not-host-network", Expression: "!has(object.spec.hostNetwork) || !object.spec.hostNetwork"},
	{Name: "has-named-port", Expression: "object.spec.containers.exists(c, has(c.ports) && c.ports.exists(p, has(p.name) && p.name != ''))"},
}

// checkWebhookScope checks which Pods reach the fail-closed webhook: only
// those in the namespaces the controller lists in the one
// `kubernetes.io/metadata.name In` requirement (found, as the controller
// finds it, by key and operator; the last, and holding only the
// placeholder as rendered), never kube-system, the release namespace or
// namespaces labelled gatehouse.dev/injection=disabled even when listed,
// and never host-network Pods or Pods without a named port.
func checkWebhookScope(t *testing.T, wh admissionregistrationv1.MutatingWebhook, releaseNS string) {
	t.Helper()
	if wh.FailurePolicy == nil || *wh.FailurePolicy != admissionregistrationv1.Fail {
		t.Errorf("webhook %s failurePolicy %v, want Fail", wh.Name, wh.FailurePolicy)
	}
	if wh.TimeoutSeconds == nil || *wh.TimeoutSeconds < 1 || *wh.TimeoutSeconds > 30 {
		t.Errorf("webhook %s timeoutSeconds %v, want 1 to 30", wh.Name, wh.TimeoutSeconds)
	}
	if diff := cmp.Diff(wantMatchConditions, wh.MatchConditions); diff != "" {
		t.Errorf("webhook %s matchConditions (-want +got):\n%s", wh.Name, diff)
	}
	if wh.NamespaceSelector == nil || len(wh.NamespaceSelector.MatchLabels) != 0 {
		t.Fatalf("webhook %s namespaceSelector %+v, want matchExpressions only", wh.Name, wh.NamespaceSelector)
	}
	exprs := wh.NamespaceSelector.MatchExpressions
	var owned []int
	for i, e := range exprs {
		if e.Key == corev1.LabelMetadataName && e.Operator == metav1.LabelSelectorOpIn {
			owned = append(owned, i)
		}
	}
	if len(owned) != 1 || owned[0] != len(exprs)-1 || !slices.Equal(exprs[owned[0]].Values, []string{protectedNamespacesPlaceholder}) {
		t.Fatalf("webhook %s namespaceSelector %+v: want exactly one %s In requirement, the last, with the values [%s]",
			wh.Name, exprs, corev1.LabelMetadataName, protectedNamespacesPlaceholder)
	}
	if errs := validation.IsValidLabelValue(protectedNamespacesPlaceholder); len(errs) > 0 {
		t.Errorf("placeholder %q is not a label value: %q", protectedNamespacesPlaceholder, errs)
	}
	if len(validation.IsDNS1123Label(protectedNamespacesPlaceholder)) == 0 {
		t.Errorf("placeholder %q could name a namespace", protectedNamespacesPlaceholder)
	}

	// What the selector matches once the controller lists names.
	matches := func(listed []string, name string, nsLabels map[string]string) bool {
		sel := wh.NamespaceSelector.DeepCopy()
		sel.MatchExpressions[owned[0]].Values = listed
		set := labels.Set{corev1.LabelMetadataName: name}
		for k, v := range nsLabels {
			set[k] = v
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			t.Fatalf("webhook %s namespaceSelector: %v", wh.Name, err)
		}
		return s.Matches(set)
	}
	disabled := map[string]string{controllers.NamespaceInjectionLabel: "disabled"}
	if matches([]string{protectedNamespacesPlaceholder}, "shop", nil) {
		t.Error("the rendered namespaceSelector matches a namespace the controller has not listed")
	}
	for _, ns := range []string{"kube-system", releaseNS} {
		if matches([]string{ns, "shop"}, ns, nil) {
			t.Errorf("the namespaceSelector matches namespace %s when the controller lists it", ns)
		}
	}
	if matches([]string{"shop"}, "shop", disabled) {
		t.Errorf("the namespaceSelector matches a listed namespace labelled %s=disabled", controllers.NamespaceInjectionLabel)
	}
	if len(exprs) == 3 && !matches([]string{"shop"}, "shop", nil) { // no extra requirements from values
		t.Errorf("the namespaceSelector %+v does not match a namespace the controller lists", exprs)
	}
}

// preStopSleep is the seconds of c's preStop sleep action, 0 without one.
func preStopSleep(c *corev1.Container) int64 {
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		return 0
	}
	return c.Lifecycle.PreStop.Sleep.Seconds
}

// TestControllerScheduling: the controller's Pods spread over nodes
// (required) and zones (preferred) unless the values set their own
// podAntiAffinity, other affinity from the values is kept beside the
// spread, the PriorityClass is the values' or the chart's own, and the
// preStop sleep and grace period follow webhook.preStopSleepSeconds.
func TestControllerScheduling(t *testing.T) {
	t.Parallel()
	const provider = "providers:\n  - {name: corp, issuerURL: https://login.example.com, clientID: gatehouse}\n"
	controllerPods := &metav1.LabelSelector{MatchLabels: map[string]string{
		"app.kubernetes.io/name": "gatehouse", "app.kubernetes.io/instance": releaseName, "app.kubernetes.io/component": "controller",
	}}
	spread := &corev1.PodAntiAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
			LabelSelector: controllerPods, MatchLabelKeys: []string{"pod-template-hash"}, TopologyKey: corev1.LabelHostname,
		}},
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 100, PodAffinityTerm: corev1.PodAffinityTerm{
			LabelSelector: controllerPods, MatchLabelKeys: []string{"pod-template-hash"}, TopologyKey: corev1.LabelTopologyZone,
		}}},
	}
	tests := []struct {
		name          string
		set           string // a value set of testdata, or
		values        string // values of its own
		affinity      *corev1.Affinity
		priorityClass string
		chartClass    int32 // value of the chart's PriorityClass; 0 when none
		sleep, grace  int64
	}{
		{name: "defaults", set: "minimal", affinity: &corev1.Affinity{PodAntiAffinity: spread}, sleep: 5, grace: 35},
		{
			name: "node affinity beside the spread", set: "production",
			affinity: &corev1.Affinity{
				NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
					MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "node-role.example.com/platform", Operator: corev1.NodeSelectorOpExists}},
				}}}},
				PodAntiAffinity: spread,
			},
			priorityClass: "platform-critical", sleep: 5, grace: 35,
		},
		{
			name: "own spread and the chart's PriorityClass", set: "scheduling",
			affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
				PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 50, PodAffinityTerm: corev1.PodAffinityTerm{
					LabelSelector: controllerPods, TopologyKey: corev1.LabelHostname,
				}}},
			}},
			priorityClass: "gatehouse", chartClass: 100000, sleep: 10, grace: 40,
		},
		{
			name: "spread turned off and no preStop sleep", values: provider + "replicaCount: 1\naffinity:\n  podAntiAffinity: {}\nwebhook:\n  preStopSleepSeconds: 0\n",
			affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{}}, sleep: 0, grace: 30,
		},
		{
			name: "the chart's PriorityClass by name", values: provider + "priorityClassName: gatehouse-critical\npriorityClass:\n  create: true\n",
			affinity: &corev1.Affinity{PodAntiAffinity: spread}, priorityClass: "gatehouse-critical", chartClass: 1000000, sleep: 5, grace: 35,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var r rendered
			if tc.set != "" {
				_, r = render(t, tc.set)
			} else {
				r = renderValues(t, tc.values)
			}
			r, _ = r.split()
			spec := as[appsv1.Deployment](t, r.get(t, "Deployment", "")).Spec.Template.Spec
			if diff := cmp.Diff(tc.affinity, spec.Affinity); diff != "" {
				t.Errorf("affinity (-want +got):\n%s", diff)
			}
			if spec.PriorityClassName != tc.priorityClass {
				t.Errorf("priorityClassName %q, want %q", spec.PriorityClassName, tc.priorityClass)
			}
			switch pcs := r.all("PriorityClass"); {
			case tc.chartClass == 0 && len(pcs) > 0:
				t.Errorf("the chart made PriorityClass %s", pcs[0].GetName())
			case tc.chartClass != 0:
				pc := as[schedulingv1.PriorityClass](t, r.get(t, "PriorityClass", tc.priorityClass))
				if pc.Value != tc.chartClass {
					t.Errorf("PriorityClass %s has value %d, want %d", pc.Name, pc.Value, tc.chartClass)
				}
			}
			if got := preStopSleep(containerNamed(t, spec.Containers, "controller")); got != tc.sleep {
				t.Errorf("preStop sleep %ds, want %ds", got, tc.sleep)
			}
			if g := spec.TerminationGracePeriodSeconds; g == nil || *g != tc.grace {
				t.Errorf("terminationGracePeriodSeconds %v, want %d", g, tc.grace)
			}
			if tc.set == "minimal" && len(spec.TopologySpreadConstraints) != 0 {
				t.Errorf("topologySpreadConstraints %+v by default; the affinity spreads the replicas", spec.TopologySpreadConstraints)
			}
		})
	}
}

// renderValues runs helm template with the given values file content.
func renderValues(t *testing.T, values string) rendered {
	t.Helper()
	file := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(file, []byte(values), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := helm(t, "template", releaseName, chartDir, "--namespace", releaseNS, "-f", file)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := splitObjects(out)
	if err != nil {
		t.Fatal(err)
	}
	return rendered{namespace: releaseNS, objs: objs}
}

// parseFlags reads --name=value and --name arguments.
func parseFlags(t *testing.T, args []string) map[string]string {
	t.Helper()
	flags := map[string]string{}
	for _, a := range args {
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || name == "" {
			t.Fatalf("argument %q is not --name[=value]", a)
		}
		if _, dup := flags[name]; dup {
			t.Errorf("flag --%s given twice in %q", name, args)
		}
		flags[name] = value
	}
	return flags
}

func containerNamed(t *testing.T, cs []corev1.Container, name string) *corev1.Container {
	t.Helper()
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

// volumeAt returns the volume c mounts at dir.
func volumeAt(t *testing.T, spec corev1.PodSpec, c *corev1.Container, dir string) *corev1.Volume {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) != path.Clean(dir) {
			continue
		}
		for i := range spec.Volumes {
			if spec.Volumes[i].Name == m.Name {
				return &spec.Volumes[i]
			}
		}
	}
	t.Fatalf("container %s mounts nothing at %s", c.Name, dir)
	return nil
}

func selects(sel *metav1.LabelSelector, set labels.Set) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && sel != nil && !s.Empty() && s.Matches(set)
}

func yamlRoundTrip(in any, out any) error {
	b, err := yaml.Marshal(in)
	if err != nil {
		return err
	}
	return yaml.UnmarshalStrict(b, out)
}

func ptrTo[T any](v T) *T { return &v }

// checkBroker checks the token broker's objects against the controller's
// flags: the controller points sidecars at the broker's Service, copies the
// CA of the Secret the broker serves from, and writes the registry the
// broker reads; both read the same config file. Without a provider in
// broker mode there is no broker, and the controller has no --broker-url.
func checkBroker(t *testing.T, r rendered, flags map[string]string, file *controllers.FileConfig, config *corev1.Volume) {
	t.Helper()
	brokered := false
	if file != nil {
		for _, p := range file.Providers {
			brokered = brokered || p.Brokered()
		}
	}
	if len(r.objs) == 0 {
		if brokered || flags["broker-url"] != "" {
			t.Errorf("no broker, but a provider in broker mode (%v) or --broker-url=%q", brokered, flags["broker-url"])
		}
		return
	}
	dep := as[appsv1.Deployment](t, r.get(t, "Deployment", ""))
	tmpl := dep.Spec.Template
	podLabels := labels.Set(tmpl.Labels)
	if !selects(dep.Spec.Selector, podLabels) {
		t.Errorf("broker Deployment selector %v does not select its Pods %v", dep.Spec.Selector, podLabels)
	}
	ctr := containerNamed(t, tmpl.Spec.Containers, "broker")
	if !slices.Equal(ctr.Command, []string{"/usr/local/bin/gatehouse"}) || len(ctr.Args) == 0 || ctr.Args[0] != "broker" {
		t.Fatalf("broker runs %q %q, want /usr/local/bin/gatehouse broker ...", ctr.Command, ctr.Args)
	}
	bflags := parseFlags(t, ctr.Args[1:])
	if v := volumeAt(t, tmpl.Spec, ctr, path.Dir(bflags["config"])); v.ConfigMap == nil || config.ConfigMap == nil || v.ConfigMap.Name != config.ConfigMap.Name {
		t.Errorf("the broker's --config=%s is not the controller's ConfigMap: %+v", bflags["config"], v)
	}
	tlsVol := volumeAt(t, tmpl.Spec, ctr, bflags["tls-cert-dir"])
	if tlsVol.Secret == nil || tlsVol.Secret.SecretName != flags["broker-tls-secret"] {
		t.Errorf("the broker serves the certificate of %+v, the controller copies the CA of Secret %q", tlsVol.Secret, flags["broker-tls-secret"])
	}
	if bflags["registry"] != flags["broker-registry"] || bflags["token-audience"] != flags["broker-token-audience"] || bflags["token-audience"] == "" {
		t.Errorf("broker --registry=%q --token-audience=%q, controller --broker-registry=%q --broker-token-audience=%q",
			bflags["registry"], bflags["token-audience"], flags["broker-registry"], flags["broker-token-audience"])
	}
	svc := as[corev1.Service](t, r.get(t, "Service", ""))
	if want := "https://" + svc.Name + "." + r.namespace + ".svc"; flags["broker-url"] != want {
		t.Errorf("controller --broker-url=%q, want the broker Service %s", flags["broker-url"], want)
	}
	if !selects(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, podLabels) || svc.Spec.Ports[0].Port != 443 ||
		svc.Spec.Ports[0].TargetPort.StrVal != "https" || ctr.Ports[0].Name != "https" ||
		":"+strconv.Itoa(int(ctr.Ports[0].ContainerPort)) != bflags["listen-address"] {
		t.Errorf("broker Service %+v does not reach the broker's --listen-address=%s (%+v)", svc.Spec, bflags["listen-address"], ctr.Ports)
	}
	if pdbs := r.all("PodDisruptionBudget"); *dep.Spec.Replicas > 1 && len(pdbs) == 1 {
		if pdb := as[policyv1.PodDisruptionBudget](t, pdbs[0]); !selects(pdb.Spec.Selector, podLabels) || pdb.Spec.MinAvailable.IntValue() != 1 {
			t.Errorf("broker PodDisruptionBudget %+v", pdb.Spec)
		}
	}
	if tmpl.Spec.Affinity == nil || tmpl.Spec.Affinity.PodAntiAffinity == nil {
		t.Errorf("broker Pods are not spread: %+v", tmpl.Spec.Affinity)
	}
	for _, sm := range r.all("ServiceMonitor") {
		var sel metav1.LabelSelector
		raw, _, _ := unstructured.NestedMap(sm.Object, "spec", "selector")
		endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		if err := yamlRoundTrip(raw, &sel); err != nil || !selects(&sel, labels.Set(svc.Labels)) || len(endpoints) != 1 || endpoints[0].(map[string]any)["port"] != "metrics" {
			t.Errorf("broker ServiceMonitor selects %+v with %v, want the broker Service's metrics port (%v)", sel, endpoints, err)
		}
	}
	// Its RBAC: TokenReviews, and in the release namespace, by name, the
	// Secrets that providers in broker mode name and the registry: list
	// and watch, which the broker makes with a metadata.name field
	// selector. A rule without resourceNames would cover every Secret of
	// the namespace (the webhook's CA key, Helm's release Secrets).
	if crs := r.all("ClusterRole"); len(crs) == 1 {
		g := grants(as[rbacv1.ClusterRole](t, crs[0]).Rules)
		if _, ok := g[grant{"authentication.k8s.io", "tokenreviews", "create"}]; !ok || len(g) != 1 {
			t.Errorf("broker ClusterRole grants %v, want only creating TokenReviews", g)
		}
		var secrets []string
		if file != nil {
			for _, p := range file.Providers {
				for _, ref := range []*controllers.SecretKeyRef{p.ClientSecretRef, p.ClientKeyRef} {
					if p.Brokered() && ref != nil && !slices.Contains(secrets, ref.Name) {
						secrets = append(secrets, ref.Name)
					}
				}
			}
		}
		want := map[grant][]string{}
		for _, verb := range []string{"list", "watch"} {
			want[grant{"", "configmaps", verb}] = []string{bflags["registry"]}
			if len(secrets) > 0 {
				want[grant{"", "secrets", verb}] = slices.Sorted(slices.Values(secrets))
			}
		}
		got := grants(as[rbacv1.Role](t, r.get(t, "Role", "")).Rules)
		for g, names := range got {
			if len(names) == 0 {
				t.Errorf("broker Role grants %v on every object, want resourceNames", g)
			}
			slices.Sort(names)
		}
		if diff := cmp.Diff(want, got, cmp.AllowUnexported(grant{})); diff != "" {
			t.Errorf("broker Role (-want +got):\n%s", diff)
		}
	}
}
