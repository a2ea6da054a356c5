package controllers

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the controller's own Prometheus metrics; controller-runtime
// adds reconcile counts, durations and errors (controller_runtime_*).
type metrics struct {
	decisions      *prometheus.CounterVec
	unprotected    *prometheus.GaugeVec
	stale          *prometheus.GaugeVec
	degraded       *prometheus.GaugeVec
	rolloutBlocked *prometheus.GaugeVec
	replaced       prometheus.Counter
	providerOK     *prometheus.GaugeVec
	decisionTime   prometheus.Histogram
}

// newMetrics registers the metrics on reg (the manager's registry).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_controller_webhook_decisions_total",
			Help: "Pod admission decisions: injected, injected-last-good, not-selected, secret-pending, no-named-port, host-network, refused, error.",
		}, []string{"decision"}),
		unprotected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gatehouse_controller_unprotected_pods",
			Help: "Pods behind an enabled Ingress that run without a sidecar enforcing its current settings.",
		}, []string{"namespace", "ingress"}),
		stale: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gatehouse_controller_stale_pods",
			Help: "Pods behind an enabled Ingress whose sidecar enforces the current settings with an older image or other resources; they are not evicted and get the current sidecar at their next rollout.",
		}, []string{"namespace", "ingress"}),
		degraded: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gatehouse_controller_ingress_degraded",
			Help: "1 while an enabled Ingress's settings are refused or conflict with another Ingress in front of the same app, so the last good settings stay in force (or, without any, new Pods are refused).",
		}, []string{"namespace", "ingress"}),
		rolloutBlocked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gatehouse_controller_rollout_blocked",
			Help: "1 while a PodDisruptionBudget refuses the eviction that a rollout of the Ingress's Pods needs.",
		}, []string{"namespace", "ingress"}),
		replaced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_controller_pods_replaced_total",
			Help: "Pods evicted so that their replacement gets (or loses) the sidecar.",
		}),
		providerOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gatehouse_controller_provider_discovery_ok",
			Help: "1 when the provider's OIDC discovery document was read at the last check.",
		}, []string{"provider"}),
		decisionTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gatehouse_controller_webhook_decision_duration_seconds",
			Help:    "Time the Pod webhook takes to decide and build its patch, from the decoded request to the response (fine buckets: the API server waits for it on every Pod creation).",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
	}
	m.decisions = register(reg, m.decisions)
	m.unprotected = register(reg, m.unprotected)
	m.stale = register(reg, m.stale)
	m.degraded = register(reg, m.degraded)
	m.rolloutBlocked = register(reg, m.rolloutBlocked)
	m.replaced = register(reg, m.replaced)
	m.providerOK = register(reg, m.providerOK)
	m.decisionTime = register(reg, m.decisionTime)
	return m
}

func (m *metrics) webhook(decision string) { m.decisions.WithLabelValues(decision).Inc() }

// register registers c, or returns the collector already registered under
// its name (a second manager in one process, as in tests).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

// certificateExpiry reports the notAfter of the webhook's serving
// certificate in dir (tls.crt), read at each scrape, so that it follows
// renewals by cert-manager or by the controller itself.
func certificateExpiry(reg prometheus.Registerer, dir string) {
	register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_controller_webhook_certificate_expiry_timestamp_seconds",
		Help: "Unix time at which the webhook's serving certificate expires; 0 while it cannot be read. The API server refuses to call the webhook after that, and the fail-closed webhook then blocks Pods in protected namespaces.",
	}, func() float64 { return certNotAfter(dir) }))
}

// MetricDoc documents one metric the controller exports.
type MetricDoc struct {
	Name, Type, Help string
	Labels           []string
}

// ControllerMetrics documents the controller's own metrics, described by
// the collectors themselves (so vectors that hold no series yet count).
func ControllerMetrics() []MetricDoc {
	var reg recorder
	newMetrics(&reg)
	certificateExpiry(&reg, "")
	var out []MetricDoc
	for _, c := range reg {
		ch := make(chan *prometheus.Desc, 8)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := descRE.FindStringSubmatch(d.String())
			if m == nil {
				continue
			}
			doc := MetricDoc{Type: metricType(c)}
			doc.Name, _ = strconv.Unquote(m[1])
			doc.Help, _ = strconv.Unquote(m[2])
			if m[3] != "" {
				doc.Labels = strings.Split(m[3], ",")
			}
			out = append(out, doc)
		}
	}
	slices.SortFunc(out, func(a, b MetricDoc) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// descRE reads a prometheus.Desc's String(), which is how a Desc tells its
// name, help and variable labels.
var descRE = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*"), help: ("(?:[^"\\]|\\.)*"), unit: "[^"]*", constLabels: \{[^}]*\}, variableLabels: \{([^}]*)\}\}$`)

func metricType(c prometheus.Collector) string {
	switch c.(type) {
	case *prometheus.CounterVec, prometheus.Counter:
		return "counter"
	case *prometheus.HistogramVec, prometheus.Histogram:
		return "histogram"
	default:
		return "gauge"
	}
}

// recorder is a Registerer that keeps the collectors registered on it.
type recorder []prometheus.Collector

func (r *recorder) Register(c prometheus.Collector) error   { *r = append(*r, c); return nil }
func (r *recorder) MustRegister(cs ...prometheus.Collector) { *r = append(*r, cs...) }
func (r *recorder) Unregister(prometheus.Collector) bool    { return false }

// RuntimeMetrics are the metrics of controller-runtime, client-go and the
// Go runtime (in controller-runtime's registry when a manager runs) that
// Gatehouse's dashboard and alerts use; a test against a running manager
// checks that each exists.
var RuntimeMetrics = []string{
	"controller_runtime_reconcile_total",
	"controller_runtime_reconcile_errors_total",
	"controller_runtime_reconcile_time_seconds",
	"controller_runtime_webhook_requests_total",
	"controller_runtime_webhook_latency_seconds",
	"workqueue_depth",
	"rest_client_requests_total",
	"process_resident_memory_bytes",
	"go_memstats_heap_alloc_bytes",
}

// MetricsReference renders the controller's metrics as Markdown.
func MetricsReference() string {
	var b strings.Builder
	b.WriteString("| metric | type | labels | meaning |\n| --- | --- | --- | --- |\n")
	for _, m := range ControllerMetrics() {
		labels := ""
		if len(m.Labels) > 0 {
			labels = "`" + strings.Join(m.Labels, "`, `") + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", m.Name, m.Type, labels, strings.ReplaceAll(m.Help, "|", `\|`))
	}
	return b.String()
}
