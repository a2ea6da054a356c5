// Package charts_test checks the Helm chart in charts/gatehouse: helm lint,
// golden renderings of a few value sets, the values schema, the NOTES, the
// wiring between the rendered objects and the controller's own conventions,
// a server-side dry run of every rendered object against a real API server
// (envtest), and a real install whose configuration, RBAC and webhook run
// the controller binary, and whose helm test RBAC runs webhook-check.
//
// helm comes from hack/helm.sh and the control plane from
// hack/envtest-binaries.sh, both built once per machine. The control plane
// starts only for the tests that need it, so
// go test ./charts -run 'Lint|Golden|Schema|Notes|Wiring|RBAC|Webhook' needs
// neither etcd nor kube-apiserver.
package charts_test

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/gatehouse-dev/gatehouse/internal/controlplane"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from helm template")

const (
	chartDir    = "gatehouse"
	releaseName = "gatehouse"
	releaseNS   = "gatehouse-system"
)

// helmBin is hack/helm.sh's helm; helmHome keeps its cache and
// configuration out of the user's home.
var helmBin, helmHome string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	flag.Parse()
	cmd := exec.Command("../hack/helm.sh")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "helm: %v (run hack/helm.sh)\n", err)
		return 1
	}
	helmBin = strings.TrimSpace(string(out))
	if helmHome, err = os.MkdirTemp("", "gatehouse-helm-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(helmHome)
	defer stopCluster()
	return m.Run()
}

// helm runs the helm binary and returns its standard output; a failure's
// error carries its standard error.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBin, args...) // also from Cleanup, when t.Context() is done
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(helmHome, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(helmHome, "config"),
		"HELM_DATA_HOME="+filepath.Join(helmHome, "data"),
		"KUBECONFIG="+filepath.Join(helmHome, "no-kubeconfig"), // only --kubeconfig reaches a cluster
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// valueSets are the names of testdata/<name>.values.yaml.
func valueSets(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no value sets in testdata: %v", err)
	}
	var names []string
	for _, f := range files {
		names = append(names, strings.TrimSuffix(filepath.Base(f), ".values.yaml"))
	}
	sort.Strings(names)
	return names
}

func valuesFile(set string) string {
	return filepath.Join("testdata", set+".values.yaml")
}

// rendered is one `helm template` output, split into objects.
type rendered struct {
	namespace string
	objs      []*unstructured.Unstructured
}

// render runs helm template for the value set as release gatehouse in
// namespace gatehouse-system.
func render(t *testing.T, set string) (string, rendered) {
	t.Helper()
	return renderRelease(t, releaseName, set, releaseNS)
}

// renderRelease runs helm template for the value set as release into
// namespace.
func renderRelease(t *testing.T, release, set, namespace string) (string, rendered) {
	t.Helper()
	out, err := helm(t, "template", release, chartDir, "--namespace", namespace, "-f", valuesFile(set))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := splitObjects(out)
	if err != nil {
		t.Fatalf("helm template %s: %v", set, err)
	}
	return out, rendered{namespace: namespace, objs: objs}
}

// splitObjects parses a multi-document YAML stream; documents holding only
// comments are skipped.
func splitObjects(stream string) ([]*unstructured.Unstructured, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(stream)))
	var objs []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("%w in:\n%s", err, doc)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("document without kind or name:\n%s", doc)
		}
		objs = append(objs, u)
	}
}

// get returns the only object of kind named name (any name when name is
// empty), failing the test when there is not exactly one.
func (r rendered) get(t *testing.T, kind, name string) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, o := range r.all(kind) {
		if name == "" || o.GetName() == name {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d rendered %s objects named %q, want 1", len(found), kind, name)
	}
	return found[0]
}

// only returns the Helm hooks (objects annotated helm.sh/hook, which helm
// install leaves out: the chart's are helm test's) when hooks is true, else
// the other objects.
func (r rendered) only(hooks bool) rendered {
	out := rendered{namespace: r.namespace}
	for _, o := range r.objs {
		if _, hook := o.GetAnnotations()["helm.sh/hook"]; hook == hooks {
			out.objs = append(out.objs, o)
		}
	}
	return out
}

// split returns the objects of the token broker (component broker) apart
// from the rest: the controller's, the webhook's and the shared ones.
func (r rendered) split() (rest, broker rendered) {
	rest, broker = rendered{namespace: r.namespace}, rendered{namespace: r.namespace}
	for _, o := range r.objs {
		if o.GetLabels()["app.kubernetes.io/component"] == "broker" {
			broker.objs = append(broker.objs, o)
		} else {
			rest.objs = append(rest.objs, o)
		}
	}
	return rest, broker
}

func (r rendered) all(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range r.objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// as converts u into the typed object T, failing on fields T does not
// have (a misspelt field in a template).
func as[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	var out T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, &out, true); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return &out
}

// cluster is the envtest control plane shared by the tests that need one.
type testCluster struct {
	cp         *controlplane.ControlPlane
	env        *envtest.Environment
	config     *rest.Config // system:masters
	client     client.Client
	kubeconfig string // file for helm, system:masters
}

var (
	clusterOnce sync.Once
	shared      *testCluster // set by startCluster
	clusterErr  error
)

// cluster starts the control plane on first use; TestMain stops it.
func cluster(t *testing.T) *testCluster {
	t.Helper()
	clusterOnce.Do(func() { clusterErr = startCluster() })
	if clusterErr != nil {
		t.Fatalf("envtest: %v", clusterErr)
	}
	return shared
}

// startCluster starts the control plane into shared.
func startCluster() error {
	cp, err := controlplane.Start(controlplane.Options{
		Root: "..", Progress: os.Stderr, CRDPaths: []string{filepath.Join("testdata", "crds")},
	})
	if err != nil {
		return err
	}
	shared = &testCluster{cp: cp, env: cp.Env, config: cp.Config} // stopCluster stops it even when the rest fails
	if shared.client, err = client.New(cp.Config, client.Options{}); err != nil {
		return err
	}
	shared.kubeconfig, err = cp.Kubeconfig("chart-test-admin", "system:masters")
	return err
}

func stopCluster() {
	if shared != nil {
		_ = shared.cp.Stop()
	}
}
