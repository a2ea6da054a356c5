package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Request results, the label of gatehouse_proxy_requests_total.
const (
	resultProxied         = "proxied"
	resultSkipped         = "skipped"
	resultUnauthenticated = "unauthenticated"
	resultLogin           = "login_redirect"
	resultForbidden       = "forbidden"
	resultEndpoint        = "endpoint"
	resultError           = "error"
)

// metrics are the proxy's Prometheus metrics, on a registry of its own.
type metrics struct {
	registry           *prometheus.Registry
	requests           *prometheus.CounterVec
	byResult           map[string]prometheus.Counter
	duration           prometheus.Histogram
	logins             *prometheus.CounterVec
	upstreamErrors     prometheus.Counter
	idpReady           prometheus.Gauge
	policyReloads      *prometheus.CounterVec
	decisions          *prometheus.CounterVec
	refreshes          prometheus.Counter
	backchannelLogouts prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_proxy_requests_total",
			Help: "Requests by outcome: proxied, skipped (skip-auth path), unauthenticated, login_redirect, forbidden, endpoint (the proxy's own), error.",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gatehouse_proxy_request_duration_seconds",
			Help:    "Time to serve proxied requests, upstream included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_proxy_logins_total",
			Help: "Logins by result: started, succeeded, failed.",
		}, []string{"result"}),
		upstreamErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_proxy_upstream_errors_total",
			Help: "Requests the upstream could not answer (502).",
		}),
		idpReady: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatehouse_proxy_idp_discovered",
			Help: "1 once the identity provider's discovery document has been read.",
		}),
		policyReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_proxy_policy_reloads_total",
			Help: "Reloads of the policy keys of --config by result: success, failure.",
		}, []string{"result"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_proxy_authz_denied_total",
			Help: "Authenticated requests refused, by the rule that failed.",
		}, []string{"rule"}),
	}
	m.refreshes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatehouse_proxy_token_refreshes_total",
		Help: "Access tokens refreshed with the refresh token.",
	})
	m.backchannelLogouts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatehouse_proxy_backchannel_logouts_total",
		Help: "Valid back-channel logout tokens processed.",
	})
	m.registry.MustRegister(m.refreshes, m.backchannelLogouts, m.requests, m.duration, m.logins, m.upstreamErrors, m.idpReady, m.policyReloads, m.decisions,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.byResult = map[string]prometheus.Counter{}
	for _, r := range []string{resultProxied, resultSkipped, resultUnauthenticated, resultLogin, resultForbidden, resultEndpoint, resultError} {
		m.byResult[r] = m.requests.WithLabelValues(r)
	}
	for _, r := range []string{"started", "succeeded", "failed"} {
		m.logins.WithLabelValues(r)
	}
	for _, r := range []string{"success", "failure"} {
		m.policyReloads.WithLabelValues(r)
	}
	return m
}

func (m *metrics) count(result string) { m.byResult[result].Inc() }
