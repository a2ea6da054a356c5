package controllers_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

// TestScale is the controller's scale measurement, run by
// `make bench-controller` (GATEHOUSE_SCALE=1): it creates 1,000 annotated
// Ingresses with their Services on the test API server and reports how
// long the controller takes to reconcile all of them (every per-Ingress
// Secret exists) and the peak RSS of the process running the controller.
func TestScale(t *testing.T) {
	if os.Getenv("GATEHOUSE_SCALE") == "" {
		t.Skip("scale measurement: run make bench-controller")
	}
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("GATEHOUSE_SCALE")); err == nil && v > 1 {
		n = v
	}
	ns := newNamespace(t, nil)
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			name := fmt.Sprintf("app-%04d", i)
			svc := service(ns, name, intstr.FromString("http"))
			svc.Spec.ClusterIP = corev1.ClusterIPNone // the test API server has a /24 of Service IPs
			create(t, svc)
			create(t, ingress(ns, name, map[string]string{controllers.AnnEnabled: "true"}, []string{name + ".example.com"}, name))
		})
	}
	wg.Wait()
	created := time.Since(start)
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var secrets corev1.SecretList
		if err := k8s.List(t.Context(), &secrets, client.InNamespace(ns), client.HasLabels{controllers.SecretLabelIngress}); err != nil {
			t.Fatal(err)
		}
		if len(secrets.Items) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d Ingresses reconciled after 5 minutes", len(secrets.Items), n)
		}
		time.Sleep(100 * time.Millisecond) //nolint:forbidigo // polling the API server
	}
	total := time.Since(start)
	peak := vmHWM(t)
	report := fmt.Sprintf("| Ingresses | created in | all reconciled after | peak RSS of the controller process |\n| --: | --: | --: | --: |\n| %d | %.1f s | %.1f s | %d MiB |\n",
		n, created.Seconds(), total.Seconds(), peak>>10)
	t.Logf("\n%s", report)
	if out := os.Getenv("GATEHOUSE_SCALE_REPORT"); out != "" {
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if total > 60*time.Second {
		t.Errorf("reconciling %d Ingresses took %v, target 60s", n, total)
	}
	if peak > 150<<10 {
		t.Errorf("peak RSS %d MiB, target 150 MiB", peak>>10)
	}
}

// vmHWM reads this process's peak resident memory in KiB.
func vmHWM(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kib
		}
	}
	t.Fatal("no VmHWM")
	return 0
}
