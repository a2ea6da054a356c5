package controllers_test

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/gatehouse-dev/gatehouse/controllers"
	"github.com/gatehouse-dev/gatehouse/internal/controlplane"
)

// scaleCP is the control plane of the scale measurement.
var scaleCP *controlplane.ControlPlane

// runScale is TestMain for `make bench-controller` (GATEHOUSE_SCALE set):
// a control plane with kube-controller-manager, and no controller in this
// process. TestScale runs the controller as its own process, the way it
// runs in a cluster, so that its memory and API requests are its own.
func runScale(m *testing.M) int {
	webhooks, err := scopedWebhooks("../config/webhook/manifests.yaml")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// kube-controller-manager makes the Deployments' Pods; its own client
	// limit (20/s) would take minutes for ten thousand.
	cp, err := controlplane.Start(controlplane.Options{
		Root: "..", Progress: os.Stderr, Webhooks: webhooks,
		Controllers: controlplane.DeploymentControllers,
		ControllerManagerFlags: []string{"--kube-api-qps=500", "--kube-api-burst=1000",
			"--concurrent-deployment-syncs=20", "--concurrent-replicaset-syncs=20", "--concurrent-gc-syncs=20"},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "control plane: %v\n", err)
		return 1
	}
	defer func() { _ = cp.Stop() }()
	scaleCP = cp
	webhookConfiguration = webhooks[0].Name
	// The benchmark's own client (creating the cluster) is not what is
	// measured: it may go as fast as the API server.
	driver := rest.CopyConfig(cp.Config)
	driver.QPS, driver.Burst = -1, 0
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	if k8s, err = client.New(driver, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: managerNS}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-oidc", Namespace: managerNS},
			Data: map[string][]byte{"client-secret": []byte(providerSecret)}},
	} {
		if err := k8s.Create(context.Background(), obj); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return m.Run()
}

// scaleShape is the cluster the measurement builds.
type scaleShape struct {
	pods, namespaces, protectedNamespaces, annotated, plain int
}

func (s scaleShape) protectedReplicas() int { return 2 }

// plainReplicas spreads the Pods that no Ingress protects over the apps
// behind the unannotated Ingresses.
func (s scaleShape) plainReplicas() int {
	return max(1, (s.pods-s.annotated*s.protectedReplicas())/s.plain)
}

// TestScale is the controller's scale measurement, run by
// `make bench-controller` (GATEHOUSE_SCALE=<Pods>). It builds a cluster of
// Deployments across 100 namespaces (most Pods not protected), 1,000
// annotated Ingresses with their Services and 1,000 unannotated ones, then
// starts `gatehouse controller` with its production client settings and
// measures: the time until every annotated Ingress is reconciled (its
// Secret exists), the rollout of the Pods that predate it, RSS and Go heap
// (peak and steady), the API requests it makes (its own
// rest_client_requests_total) during the initial sync and at rest, and
// its webhook's decision time while Pods are created and deleted at 20/s.
// It reports and asserts nothing about the figures: the targets are read
// off the report.
func TestScale(t *testing.T) {
	if os.Getenv("GATEHOUSE_SCALE") == "" {
		t.Skip("scale measurement: run make bench-controller")
	}
	shape := scaleShape{pods: 10000, namespaces: 100, protectedNamespaces: 50, annotated: 1000, plain: 1000}
	if v, err := strconv.Atoi(os.Getenv("GATEHOUSE_SCALE")); err == nil && v > 1 {
		shape.pods = v
	}
	ctx := t.Context()
	// The machine may be shared: its load is part of the figures.
	load, _ := os.ReadFile("/proc/loadavg")
	start := time.Now()
	populate(t, shape)
	t.Logf("cluster built in %s", time.Since(start).Round(time.Second))
	want := shape.annotated*shape.protectedReplicas() + shape.plain*shape.plainReplicas()
	podsReady := waitFor(t, 15*time.Minute, "Pods", func() (int, bool) {
		n := countPods(t)
		return n, n >= want
	})
	t.Logf("%d Pods exist after %s", podsReady, time.Since(start).Round(time.Second))

	ctl := startController(t)
	var peakHeap atomic.Int64
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var sampling sync.WaitGroup
	sampling.Go(func() {
		for sampleCtx.Err() == nil {
			if m, err := ctl.scrape(); err == nil {
				if h := int64(m["go_memstats_heap_alloc_bytes"]); h > peakHeap.Load() {
					peakHeap.Store(h)
				}
			}
			select {
			case <-sampleCtx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	})
	defer func() { stopSampling(); sampling.Wait() }()

	waitFor(t, 10*time.Minute, "reconciled Ingresses", func() (int, bool) {
		n := countSecrets(t)
		return n, n >= shape.annotated
	})
	reconciled := time.Since(ctl.started)
	initial := ctl.mustScrape(t)
	t.Logf("all %d annotated Ingresses reconciled after %s", shape.annotated, reconciled.Round(100*time.Millisecond))

	// The Pods that predate the controller are replaced one at a time per
	// app; at rest nothing is unprotected.
	waitFor(t, 15*time.Minute, "unprotected Pods", func() (int, bool) {
		m, err := ctl.scrape()
		if err != nil {
			return -1, false
		}
		n := int(m["gatehouse_controller_unprotected_pods"])
		return n, n == 0 && m["gatehouse_controller_pods_replaced_total"] >= float64(shape.annotated*shape.protectedReplicas())
	})
	rolledOut := time.Since(ctl.started)
	settled := ctl.mustScrape(t)
	t.Logf("rollout done after %s", rolledOut.Round(time.Second))

	// At rest: nothing changes for a minute.
	restStart := time.Now()
	before := ctl.mustScrape(t)
	idle := time.NewTimer(60 * time.Second)
	select {
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	case <-idle.C:
	}
	after := ctl.mustScrape(t)
	restRate := (after["rest_client_requests_total"] - before["rest_client_requests_total"]) / time.Since(restStart).Seconds()
	steadyRSS, _ := ctl.memory(t)
	steadyHeap := after["go_memstats_heap_alloc_bytes"]

	// Churn: Pods created and deleted at 20/s each, half of them behind
	// protected apps (injected), half not (not selected).
	churnBefore := ctl.mustScrape(t)
	createP99 := churn(t, shape, 20, 30*time.Second)
	churnAfter := ctl.mustScrape(t)
	p99 := histogramQuantile(0.99, ctl.histogram(t, churnBefore, churnAfter, "gatehouse_controller_webhook_decision_duration_seconds"))
	decisions := churnAfter["gatehouse_controller_webhook_decision_duration_seconds_count"] - churnBefore["gatehouse_controller_webhook_decision_duration_seconds_count"]
	churnRate := (churnAfter["rest_client_requests_total"] - churnBefore["rest_client_requests_total"]) / 30
	_, peakRSS := ctl.memory(t)

	report := fmt.Sprintf(`| measure | value | target |
| --- | --: | --: |
| Pods / Namespaces | %d / %d | 10,000 / 100 |
| Ingresses annotated / unannotated (with Services) | %d / %d | 1,000 / 1,000 |
| controller client, memory | %s | production defaults |
| all annotated Ingresses reconciled after start | %.1f s | 60 s |
| API requests/s during the initial sync | %.1f | |
| rollout of the %d protected Pods that predate the controller done after | %.0f s | |
| API requests/s at rest (a minute, nothing changing) | %.2f | < 1 |
| API requests/s during the churn | %.1f | |
| RSS peak / at rest | %d / %d MiB | 150 MiB |
| Go heap peak / at rest | %d / %d MiB | |
| webhook decisions during the churn (20 Pods/s created and deleted) | %.0f | |
| webhook decision p99 (from its histogram) | %s | 2 ms |
| Pod create call p99 through the API server (webhook included) | %.1f ms | |
| machine: load average before the run | %s | |
`,
		podsReady, shape.namespaces, shape.annotated, shape.plain,
		fmt.Sprintf("--kube-api-qps=%d --kube-api-burst=%d, the chart's memory limit (%d MiB)", controllers.DefaultKubeAPIQPS, controllers.DefaultKubeAPIBurst, chartMemoryLimit(t)>>20),
		reconciled.Seconds(), initial["rest_client_requests_total"]/reconciled.Seconds(),
		shape.annotated*shape.protectedReplicas(), rolledOut.Seconds(),
		restRate, churnRate,
		peakRSS>>20, steadyRSS>>20, peakHeap.Load()>>20, int64(steadyHeap)>>20,
		decisions, p99, createP99.Seconds()*1000, strings.Join(strings.Fields(string(load))[:min(3, len(strings.Fields(string(load))))], " "))
	t.Logf("\n%s", report)
	t.Logf("requests by the end of the rollout: %.0f", settled["rest_client_requests_total"])
	if out := os.Getenv("GATEHOUSE_SCALE_REPORT"); out != "" {
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// populate creates the namespaces, and in them the Services, Ingresses
// and Deployments.
func populate(t *testing.T, s scaleShape) {
	type job func() error
	jobs := make(chan job)
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 32 {
		wg.Go(func() {
			for j := range jobs {
				if err := j(); err != nil {
					failed.CompareAndSwap(nil, err)
				}
			}
		})
	}
	ctx := t.Context()
	mk := func(obj client.Object) job { return func() error { return k8s.Create(ctx, obj) } }
	for i := range s.namespaces {
		jobs <- mk(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scaleNS(i)}})
	}
	app := func(name, ns string, replicas int, ann map[string]string) {
		jobs <- func() error {
			svc := service(ns, name, intstr.FromString("http"))
			svc.Spec.ClusterIP = corev1.ClusterIPNone // the test API server has a /24 of Service IPs
			for _, obj := range []client.Object{svc, ingress(ns, name, ann, []string{name + "." + ns + ".example.com"}, name), deployment(ns, name, int32(replicas), "http")} {
				if err := k8s.Create(ctx, obj); err != nil {
					return err
				}
			}
			return nil
		}
	}
	for i := range s.annotated {
		app(fmt.Sprintf("app-%04d", i), scaleNS(i%s.protectedNamespaces), s.protectedReplicas(), map[string]string{controllers.AnnEnabled: "true"})
	}
	for i := range s.plain {
		app(fmt.Sprintf("site-%04d", i), scaleNS(i%s.namespaces), s.plainReplicas(), nil)
	}
	close(jobs)
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
}

func scaleNS(i int) string { return fmt.Sprintf("team-%03d", i) }

func countPods(t *testing.T) int {
	var list metav1.PartialObjectMetadataList
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
	if err := k8s.List(t.Context(), &list); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && strings.HasPrefix(p.Namespace, "team-") {
			n++
		}
	}
	return n
}

func countSecrets(t *testing.T) int {
	var list metav1.PartialObjectMetadataList
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	if err := k8s.List(t.Context(), &list, client.HasLabels{controllers.SecretLabelIngress}); err != nil {
		t.Fatal(err)
	}
	return len(list.Items)
}

// waitFor polls done every second until it reports true, logging progress
// every 15 seconds.
func waitFor(t *testing.T, limit time.Duration, what string, done func() (int, bool)) int {
	t.Helper()
	deadline := time.Now().Add(limit)
	last := time.Now()
	for {
		n, ok := done()
		if ok {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d after %s", what, n, limit)
		}
		if time.Since(last) > 15*time.Second {
			t.Logf("  %s: %d", what, n)
			last = time.Now()
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(time.Second):
		}
	}
}

// controllerProcess is `gatehouse controller` running against the test
// control plane.
type controllerProcess struct {
	cmd     *exec.Cmd
	started time.Time
	metrics string
}

// startController builds the gatehouse binary and runs its controller
// with the production defaults for everything but addresses: its client
// settings, leader election, a self-made webhook certificate (the
// webhook configuration points at its loopback URL).
func startController(t *testing.T) *controllerProcess {
	dir := t.TempDir()
	bin := filepath.Join(dir, "gatehouse")
	build := exec.Command("go", "build", "-o", bin, "./cmd/gatehouse")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	idp := httptest.NewServer(nil)
	idp.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"issuer":%q}`, idp.URL)
	})
	t.Cleanup(idp.Close)
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `providers:
  - name: default
    issuerURL: %s
    clientID: gatehouse
    clientSecretRef: {name: gatehouse-oidc, key: client-secret}
    allowedNamespaces: ["*"]
defaults:
  provider: default
`, idp.URL), 0o600); err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := scaleCP.Kubeconfig("system:serviceaccount:gatehouse-system:gatehouse", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	webhookPort, metricsPort, healthPort := freePort(t), freePort(t), freePort(t)
	logFile, err := os.Create(filepath.Join(os.TempDir(), "gatehouse-scale-controller.log"))
	if err != nil {
		t.Fatal(err)
	}
	c := &controllerProcess{metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)}
	c.cmd = exec.Command(bin, "controller",
		"--config="+config, "--kubeconfig="+kubeconfig, "--namespace="+managerNS,
		"--sidecar-image=gatehouse:bench", "--log-level=warn",
		"--webhook-configuration="+webhookConfiguration,
		fmt.Sprintf("--webhook-url=https://127.0.0.1:%d%s", webhookPort, controllers.WebhookPath),
		fmt.Sprintf("--webhook-port=%d", webhookPort),
		fmt.Sprintf("--metrics-address=127.0.0.1:%d", metricsPort),
		fmt.Sprintf("--health-address=127.0.0.1:%d", healthPort))
	// As the chart runs it: told its container's memory limit, which sets
	// the Go runtime's soft limit.
	c.cmd.Env = append(os.Environ(), fmt.Sprintf("GATEHOUSE_MEMORY_LIMIT=%d", chartMemoryLimit(t)))
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	c.started = time.Now()
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = controlplane.StopProcess(c.cmd.Process, done)
		_ = logFile.Close()
	})
	return c
}

// chartMemoryLimit is the controller's memory limit in the chart's
// default values, in bytes.
func chartMemoryLimit(t *testing.T) int64 {
	raw, err := os.ReadFile("../charts/gatehouse/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Resources corev1.ResourceRequirements `json:"resources"`
	}
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	limit := values.Resources.Limits.Memory().Value()
	if limit <= 0 {
		t.Fatal("the chart's values set no memory limit for the controller")
	}
	return limit
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// scrape reads the controller's metrics: each series keyed by its name
// with labels, and each name with the sum of its series.
func (c *controllerProcess) scrape() (map[string]float64, error) {
	resp, err := http.Get(c.metrics) //nolint:noctx // loopback, short-lived
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		series := line[:i]
		out[series] = v
		if j := strings.IndexByte(series, '{'); j > 0 {
			out[series[:j]] += v
		}
	}
	return out, sc.Err()
}

func (c *controllerProcess) mustScrape(t *testing.T) map[string]float64 {
	m, err := c.scrape()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// memory reads the process's resident memory now and at its peak.
func (c *controllerProcess) memory(t *testing.T) (rss, peak int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		for key, dst := range map[string]*int64{"VmRSS:": &rss, "VmHWM:": &peak} {
			if v, ok := strings.CutPrefix(line, key); ok {
				kib, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				*dst = kib << 10
			}
		}
	}
	return rss, peak
}

type bucket struct {
	le    float64
	count float64
}

// histogram is the difference of a histogram's cumulative buckets between
// two scrapes.
func (c *controllerProcess) histogram(t *testing.T, before, after map[string]float64, name string) []bucket {
	var out []bucket
	for series, v := range after {
		rest, ok := strings.CutPrefix(series, name+`_bucket{le="`)
		if !ok {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(rest, `"}`), 64)
		if err != nil {
			t.Fatalf("bucket %s: %v", series, err)
		}
		out = append(out, bucket{le, v - before[series]})
	}
	slices.SortFunc(out, func(a, b bucket) int {
		switch {
		case a.le < b.le:
			return -1
		case a.le > b.le:
			return 1
		}
		return 0
	})
	return out
}

// histogramQuantile is Prometheus's histogram_quantile: the bucket that
// holds the quantile, interpolated linearly within it.
func histogramQuantile(q float64, buckets []bucket) string {
	if len(buckets) == 0 || buckets[len(buckets)-1].count == 0 {
		return "no decisions"
	}
	rank := q * buckets[len(buckets)-1].count
	lower, below := 0.0, 0.0
	for _, b := range buckets {
		if b.count >= rank {
			if math.IsInf(b.le, 1) {
				return fmt.Sprintf("> %.1f ms", lower*1000)
			}
			v := lower + (b.le-lower)*(rank-below)/math.Max(b.count-below, 1)
			return fmt.Sprintf("%.2f ms (bucket %g-%g ms)", v*1000, lower*1000, b.le*1000)
		}
		lower, below = b.le, b.count
	}
	return "?"
}

// churn creates rate Pods a second, and deletes them as fast, for d; half
// behind protected apps. It returns the p99 of the create calls.
func churn(t *testing.T, s scaleShape, rate int, d time.Duration) time.Duration {
	ctx := t.Context()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	end := time.Now().Add(d)
	var mu sync.Mutex
	var samples []time.Duration
	var wg sync.WaitGroup
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		wg.Go(func() {
			app := fmt.Sprintf("site-%04d", i%s.plain)
			ns := scaleNS(i % s.namespaces)
			if i%2 == 0 {
				app = fmt.Sprintf("app-%04d", i%s.annotated)
				ns = scaleNS(i % s.annotated % s.protectedNamespaces)
			}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("churn-%06d", i), Namespace: ns, Labels: map[string]string{"app": app}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{appContainer("http")}},
			}
			start := time.Now()
			if err := k8s.Create(ctx, pod); err != nil {
				t.Errorf("create churn Pod: %v", err)
				return
			}
			mu.Lock()
			samples = append(samples, time.Since(start))
			mu.Unlock()
			if err := k8s.Delete(ctx, pod); client.IgnoreNotFound(err) != nil {
				t.Errorf("delete churn Pod: %v", err)
			}
		})
	}
	wg.Wait()
	slices.Sort(samples)
	if len(samples) == 0 {
		return 0
	}
	return samples[len(samples)*99/100]
}
