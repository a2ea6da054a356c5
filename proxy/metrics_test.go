package proxy

import (
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestMetricsExposition(t *testing.T) {
	t.Parallel()
	m := newMetrics()
	m.count(resultProxied)
	m.decisions.WithLabelValues("groups").Inc()
	for _, v := range []float64{0.0001, 0.003, 0.003, 20} {
		m.duration.Observe(v)
	}
	m.idpReady.Set(1)
	rec := httptest.NewRecorder()
	m.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		"# TYPE gatehouse_proxy_requests_total counter\n",
		`gatehouse_proxy_requests_total{result="proxied"} 1` + "\n",
		`gatehouse_proxy_requests_total{result="error"} 0` + "\n",
		`gatehouse_proxy_authz_denied_total{rule="groups"} 1` + "\n",
		"# TYPE gatehouse_proxy_request_duration_seconds histogram\n",
		`gatehouse_proxy_request_duration_seconds_bucket{le="0.0005"} 1` + "\n",
		`gatehouse_proxy_request_duration_seconds_bucket{le="0.0025"} 1` + "\n",
		`gatehouse_proxy_request_duration_seconds_bucket{le="0.005"} 3` + "\n",
		`gatehouse_proxy_request_duration_seconds_bucket{le="10"} 3` + "\n",
		`gatehouse_proxy_request_duration_seconds_bucket{le="+Inf"} 4` + "\n",
		"gatehouse_proxy_request_duration_seconds_count 4\n",
		"gatehouse_proxy_request_duration_seconds_sum 20.0061\n",
		"gatehouse_proxy_idp_discovered 1\n",
		"go_goroutines ",
		"process_start_time_seconds ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
}

// TestMetricsDescribed: Metrics describes exactly the families /metrics
// writes, with their types and labels.
func TestMetricsDescribed(t *testing.T) {
	t.Parallel()
	m := newMetrics()
	m.decisions.WithLabelValues("groups").Inc() // a family without series until then
	rec := httptest.NewRecorder()
	m.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	written := map[string]string{}
	labels := map[string][]string{}
	for line := range strings.SplitSeq(rec.Body.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, kind, _ := strings.Cut(rest, " ")
			written[name] = kind
			continue
		}
		name, rest, ok := strings.Cut(line, "{")
		if !ok || strings.HasSuffix(name, "_bucket") {
			continue
		}
		label, _, _ := strings.Cut(rest, "=")
		if !slices.Contains(labels[name], label) {
			labels[name] = append(labels[name], label)
		}
	}
	described := map[string]string{}
	for _, d := range Metrics() {
		described[d.Name] = d.Type
		if d.Help == "" {
			t.Errorf("%s has no help", d.Name)
		}
		if !slices.Equal(d.Labels, labels[d.Name]) {
			t.Errorf("%s described with labels %q, written with %q", d.Name, d.Labels, labels[d.Name])
		}
	}
	if !maps.Equal(written, described) {
		t.Errorf("families written %v, described %v", written, described)
	}
}
