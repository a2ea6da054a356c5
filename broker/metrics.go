package broker

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the broker's Prometheus series, in a registry of the
// Server's own (no global state: tests run several brokers in one
// process).
//
// Label values are bounded by what the broker knows, never by what a
// caller sends: namespace is empty until the caller authenticated,
// provider is empty unless it names a configured provider.
type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	reviews  *prometheus.CounterVec
}

// The broker's own metric names.
const (
	metricRequests = "gatehouse_broker_requests_total"
	metricDuration = "gatehouse_broker_request_duration_seconds"
	metricReviews  = "gatehouse_broker_token_reviews_total"
)

// MetricNames are the names of the broker's own metrics, for dashboards
// and alerts to be checked against.
func MetricNames() []string { return []string{metricRequests, metricDuration, metricReviews} }

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricRequests,
			Help: "Requests answered by the token broker, by caller namespace, provider, operation (exchange, refresh, revoke, other) and HTTP status code.",
		}, []string{"namespace", "provider", "operation", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricDuration,
			Help:    "Time the token broker took to answer, including the identity provider's part, by operation.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15},
		}, []string{"operation"}),
		reviews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricReviews,
			Help: "ServiceAccount tokens checked by the token broker: cached (a recent review reused), authenticated and refused (by a TokenReview, or a refusal of the last minute reused), malformed (refused before any TokenReview: not a JWT for the broker's audience with a future exp), throttled (too many TokenReviews in flight), error (the TokenReview could not be made).",
		}, []string{"result"}),
	}
	for _, r := range []string{reviewCached, reviewAuthenticated, reviewRefused, reviewMalformed, reviewThrottled, reviewError} {
		m.reviews.WithLabelValues(r)
	}
	m.registry.MustRegister(m.requests, m.duration, m.reviews,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observe records one answered request.
func (m *metrics) observe(namespace, provider, op string, status int, d time.Duration) {
	m.requests.WithLabelValues(namespace, provider, op, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(op).Observe(d.Seconds())
}

// handler serves /metrics.
func (m *metrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	return mux
}
