package proxy

import (
	"bufio"
	"math"
	"net/http"
	"os"
	"runtime"
	rtmetrics "runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
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

// The proxy writes the Prometheus text format (version 0.0.4) itself, with
// the process and Go runtime series operators know from client_golang's
// collectors under the same names. client_golang, with protobuf and procfs
// behind it, was a sixth of the sidecar's binary and about 2 MiB of its
// resident memory in every protected Pod, for a dozen counters.

// counter is a monotonically increasing count.
type counter struct{ v atomic.Uint64 }

// Inc adds one.
func (c *counter) Inc() { c.v.Add(1) }

// gauge holds one value.
type gauge struct{ bits atomic.Uint64 }

// Set sets the value.
func (g *gauge) Set(v float64) { g.bits.Store(math.Float64bits(v)) }

// counterVec is a counter family with one label.
type counterVec struct {
	mu sync.Mutex // guards m
	m  map[string]*counter
}

// WithLabelValues returns the counter of one label value, creating it.
func (v *counterVec) WithLabelValues(value string) *counter {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = map[string]*counter{}
	}
	c, ok := v.m[value]
	if !ok {
		c = &counter{}
		v.m[value] = c
	}
	return c
}

// histogram counts observations into cumulative buckets.
type histogram struct {
	bounds  []float64
	buckets []atomic.Uint64 // per bound, not cumulative; the last is +Inf
	sum     atomic.Uint64   // float64 bits
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, buckets: make([]atomic.Uint64, len(bounds)+1)}
}

// Observe records v.
func (h *histogram) Observe(v float64) {
	i, _ := slices.BinarySearch(h.bounds, v)
	h.buckets[i].Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// metrics are the proxy's Prometheus metrics.
type metrics struct {
	requests           counterVec
	byResult           map[string]*counter
	duration           *histogram
	logins             counterVec
	upstreamErrors     counter
	idpReady           gauge
	policyReloads      counterVec
	decisions          counterVec
	refreshes          counter
	backchannelLogouts counter
	start              time.Time
}

func newMetrics() *metrics {
	m := &metrics{
		duration: newHistogram([]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}),
		start:    time.Now(),
	}
	m.byResult = map[string]*counter{}
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

// ServeHTTP writes every series in the Prometheus text format.
func (m *metrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	b := bufio.NewWriter(w)
	defer func() { _ = b.Flush() }() // a client gone away is no error of ours
	m.write(expo{w: b})
}

// MetricDoc documents one metric family the sidecar exports.
type MetricDoc struct {
	Name, Type, Help string
	Labels           []string
}

// Metrics documents the sidecar's metrics, sorted by name: described by
// the code that writes /metrics, so the list cannot drift from it, and
// families that hold no series yet (a label seen only later, a process
// series read from /proc) count too.
func Metrics() []MetricDoc {
	var docs []MetricDoc
	newMetrics().write(expo{docs: &docs})
	slices.SortFunc(docs, func(a, b MetricDoc) int { return strings.Compare(a.Name, b.Name) })
	return docs
}

// write writes every family to e.
func (m *metrics) write(e expo) {
	e.vec("gatehouse_proxy_authz_denied_total", "Authenticated requests refused, by the rule that failed.", "rule", &m.decisions)
	e.counter("gatehouse_proxy_backchannel_logouts_total", "Valid back-channel logout tokens processed.", &m.backchannelLogouts)
	e.gauge("gatehouse_proxy_idp_discovered", "1 once the identity provider's discovery document has been read.", math.Float64frombits(m.idpReady.bits.Load()))
	e.vec("gatehouse_proxy_logins_total", "Logins by result: started, succeeded, failed.", "result", &m.logins)
	e.vec("gatehouse_proxy_policy_reloads_total", "Reloads of the policy keys of --config by result: success, failure.", "result", &m.policyReloads)
	e.histogram("gatehouse_proxy_request_duration_seconds", "Time to serve proxied requests, upstream included.", m.duration)
	e.vec("gatehouse_proxy_requests_total", "Requests by outcome: proxied, skipped (skip-auth path), unauthenticated, login_redirect, forbidden, endpoint (the proxy's own), error.", "result", &m.requests)
	e.counter("gatehouse_proxy_token_refreshes_total", "Access tokens refreshed with the refresh token.", &m.refreshes)
	e.counter("gatehouse_proxy_upstream_errors_total", "Requests the upstream could not answer (502).", &m.upstreamErrors)
	e.runtime()
	e.process(m.start)
}

// expo writes metric families to w or, with docs set, describes them
// there and writes nothing.
type expo struct {
	w    *bufio.Writer
	docs *[]MetricDoc
}

// describing reports whether e describes families rather than writing
// them: every family is then described, whether it has samples or not.
func (e expo) describing() bool { return e.docs != nil }

// head starts family name; labels are the labels its samples carry
// (besides a histogram's le).
func (e expo) head(name, help, kind string, labels ...string) {
	if e.describing() {
		*e.docs = append(*e.docs, MetricDoc{Name: name, Type: kind, Help: help, Labels: labels})
		return
	}
	_, _ = e.w.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " " + kind + "\n")
}

func (e expo) sample(name, labels string, v float64) {
	if e.describing() {
		return
	}
	_, _ = e.w.WriteString(name + labels + " " + strconv.FormatFloat(v, 'g', -1, 64) + "\n")
}

func (e expo) counter(name, help string, c *counter) {
	e.head(name, help, "counter")
	e.sample(name, "", float64(c.v.Load()))
}

func (e expo) gauge(name, help string, v float64) {
	e.head(name, help, "gauge")
	e.sample(name, "", v)
}

func (e expo) vec(name, help, label string, v *counterVec) {
	if e.describing() {
		e.head(name, help, "counter", label)
		return
	}
	v.mu.Lock()
	values := make([]string, 0, len(v.m))
	counts := make(map[string]uint64, len(v.m))
	for k, c := range v.m {
		values = append(values, k)
		counts[k] = c.v.Load()
	}
	v.mu.Unlock()
	if len(values) == 0 {
		return
	}
	slices.Sort(values)
	e.head(name, help, "counter")
	for _, k := range values {
		e.sample(name, "{"+label+"="+strconv.Quote(k)+"}", float64(counts[k]))
	}
}

func (e expo) histogram(name, help string, h *histogram) {
	e.head(name, help, "histogram")
	var total uint64
	for i, bound := range h.bounds {
		total += h.buckets[i].Load()
		e.sample(name+"_bucket", `{le="`+strconv.FormatFloat(bound, 'g', -1, 64)+`"}`, float64(total))
	}
	total += h.buckets[len(h.bounds)].Load()
	e.sample(name+"_bucket", `{le="+Inf"}`, float64(total))
	e.sample(name+"_sum", "", math.Float64frombits(h.sum.Load()))
	e.sample(name+"_count", "", float64(total))
}

// runtimeSamples are the runtime/metrics read for the go_ series.
var runtimeSamples = []string{
	"/sched/goroutines:goroutines",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/total:bytes",
	"/gc/cycles/total:gc-cycles",
	"/gc/gogc:percent",
	"/gc/gomemlimit:bytes",
}

// runtime writes the Go runtime's series, named as client_golang's Go
// collector names them.
func (e expo) runtime() {
	s := make([]rtmetrics.Sample, len(runtimeSamples))
	for i, name := range runtimeSamples {
		s[i].Name = name
	}
	rtmetrics.Read(s)
	val := func(i int) float64 {
		switch s[i].Value.Kind() {
		case rtmetrics.KindUint64:
			return float64(s[i].Value.Uint64())
		case rtmetrics.KindFloat64:
			return s[i].Value.Float64()
		default:
			return math.NaN()
		}
	}
	e.gauge("go_goroutines", "Number of goroutines that currently exist.", val(0))
	e.gauge("go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and currently in use.", val(1))
	e.gauge("go_memstats_sys_bytes", "Number of bytes obtained from system.", val(2))
	e.head("go_gc_cycles_total", "Number of completed GC cycles.", "counter")
	e.sample("go_gc_cycles_total", "", val(3))
	e.gauge("go_gc_gogc_percent", "Heap size target percentage configured by the user, otherwise 100.", val(4))
	e.gauge("go_gc_gomemlimit_bytes", "Go runtime memory limit configured by the user, otherwise math.MaxInt64.", val(5))
	e.gauge("go_threads", "Number of OS threads created.", float64(threads()))
	e.head("go_info", "Information about the Go environment.", "gauge", "version")
	e.sample("go_info", `{version=`+strconv.Quote(runtime.Version())+`}`, 1)
}

func threads() int {
	n, _ := runtime.ThreadCreateProfile(nil)
	return n
}

// process writes the process series client_golang's process collector
// writes on Linux, read from /proc/self; elsewhere only the start time.
func (e expo) process(start time.Time) {
	if cpu, rss, vsize, ok := procStat(); ok || e.describing() {
		e.head("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter")
		e.sample("process_cpu_seconds_total", "", cpu)
		e.gauge("process_resident_memory_bytes", "Resident memory size in bytes.", rss)
		e.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", vsize)
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil || e.describing() {
		e.gauge("process_open_fds", "Number of open file descriptors.", float64(len(fds)))
	}
	e.gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", float64(start.UnixNano())/1e9)
}

// procStat reads the process's CPU seconds, resident and virtual memory
// in bytes from /proc/self/stat.
func procStat() (cpu, rss, vsize float64, ok bool) {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, 0, 0, false
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return 0, 0, 0, false
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state): utime is field 14, stime 15, vsize 23, rss
	// (pages) 24.
	if len(f) <= 21 {
		return 0, 0, 0, false
	}
	const ticks = 100 // USER_HZ, 100 on every Linux platform Go supports
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	vsize, _ = strconv.ParseFloat(f[20], 64)
	pages, _ := strconv.ParseFloat(f[21], 64)
	return (utime + stime) / ticks, pages * float64(os.Getpagesize()), vsize, true
}
