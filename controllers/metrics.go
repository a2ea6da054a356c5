package controllers

import (
	"errors"

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
	}
	m.decisions = register(reg, m.decisions)
	m.unprotected = register(reg, m.unprotected)
	m.stale = register(reg, m.stale)
	m.degraded = register(reg, m.degraded)
	m.rolloutBlocked = register(reg, m.rolloutBlocked)
	m.replaced = register(reg, m.replaced)
	m.providerOK = register(reg, m.providerOK)
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
