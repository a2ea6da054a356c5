package charts_test

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse-dev/gatehouse/broker"
	"github.com/gatehouse-dev/gatehouse/controllers"
	"github.com/gatehouse-dev/gatehouse/proxy"
)

// TestMonitoringMetricsExist: every metric the Grafana dashboard and the
// PrometheusRule query is one the controller, the broker or the sidecar
// exports: the controller's own (described by its collectors),
// controller-runtime's and client-go's that Gatehouse relies on (checked
// against a running manager in the controllers package), the broker's, and
// the sidecar's (described by the code that writes its /metrics).
func TestMonitoringMetricsExist(t *testing.T) {
	t.Parallel()
	_, r := render(t, "production")
	var exprs []string
	dashboards, rules := 0, 0
	for _, o := range r.objs {
		switch {
		case o.GetKind() == "ConfigMap" && o.GetLabels()["grafana_dashboard"] == "1":
			dashboards++
			data, _, _ := unstructuredString(o.Object, "data", "gatehouse.json")
			var d struct {
				Panels []struct {
					Title   string `json:"title"`
					Targets []struct {
						Expr string `json:"expr"`
					} `json:"targets"`
				} `json:"panels"`
			}
			if err := json.Unmarshal([]byte(data), &d); err != nil {
				t.Fatalf("dashboard JSON: %v", err)
			}
			for _, p := range d.Panels {
				if len(p.Targets) == 0 {
					t.Errorf("panel %q has no query", p.Title)
				}
				for _, q := range p.Targets {
					exprs = append(exprs, q.Expr)
				}
			}
		case o.GetKind() == "PrometheusRule":
			groups, _ := o.Object["spec"].(map[string]any)["groups"].([]any)
			for _, g := range groups {
				for _, rule := range g.(map[string]any)["rules"].([]any) {
					rules++
					exprs = append(exprs, rule.(map[string]any)["expr"].(string))
				}
			}
		}
	}
	if dashboards != 1 || rules < 6 {
		t.Fatalf("production values render %d dashboards and %d alert rules", dashboards, rules)
	}
	known := exportedMetrics(t)
	metric := regexp.MustCompile(`\b(?:gatehouse|controller_runtime|workqueue|rest_client|process|go)_[a-z0-9_]+\b`)
	for _, e := range exprs {
		names := metric.FindAllString(e, -1)
		if len(names) == 0 {
			t.Errorf("query %q uses no metric", e)
		}
		for _, name := range names {
			base := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(name, suffix); ok && known[b] {
					base = b
				}
			}
			if !known[base] {
				t.Errorf("query %q uses %s, which neither the controller nor the sidecar exports", e, name)
			}
		}
	}
}

func unstructuredString(obj map[string]any, path ...string) (string, bool, error) {
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false, nil
		}
		cur = m[p]
	}
	s, ok := cur.(string)
	return s, ok, nil
}

// exportedMetrics are the names of the metrics the controller and the
// sidecar export.
func exportedMetrics(t *testing.T) map[string]bool {
	known := map[string]bool{}
	for _, m := range controllers.ControllerMetrics() {
		known[m.Name] = true
	}
	for _, name := range controllers.RuntimeMetrics {
		known[name] = true
	}
	for _, name := range broker.MetricNames() {
		known[name] = true
	}
	sidecar := 0
	for _, m := range proxy.Metrics() {
		known[m.Name] = true
		if strings.HasPrefix(m.Name, "gatehouse_proxy_") {
			sidecar++
		}
	}
	if sidecar == 0 || !slices.ContainsFunc(controllers.ControllerMetrics(), func(m controllers.MetricDoc) bool { return m.Name == "gatehouse_controller_rollout_blocked" }) {
		t.Fatalf("metrics not found: %d of the sidecar's, controller's %v", sidecar, controllers.ControllerMetrics())
	}
	return known
}
