package broker

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

// ErrConfig marks the errors of New that the configuration caused (the
// providers file, the certificate files): the command exits 2 on them.
var ErrConfig = errors.New("invalid configuration")

// configError marks err as a configuration error (errors.Is(err,
// ErrConfig)) without changing its text, which already names the flag.
type configError struct{ err error }

func (e configError) Error() string        { return e.err.Error() }
func (e configError) Unwrap() error        { return e.err }
func (e configError) Is(target error) bool { return target == ErrConfig }

// Config is the broker's process configuration (flags).
type Config struct {
	// ConfigFile is the providers file the controller reads too.
	ConfigFile string
	// Namespace is the broker's own: the client secrets and the registry
	// ConfigMap live there.
	Namespace     string
	ListenAddress string
	// TLSCertDir holds tls.crt and tls.key, reread when they change.
	TLSCertDir string
	// Registry names the ConfigMap, in Namespace, that lists each
	// namespace's registered callback URLs.
	Registry string
	// TokenAudience is the audience the sidecars' projected
	// ServiceAccount tokens must carry.
	TokenAudience  string
	MetricsAddress string
	HealthAddress  string
	Kubeconfig     string
	LogLevel       string
	// ShutdownTimeout bounds the draining of in-flight requests after
	// SIGTERM.
	ShutdownTimeout time.Duration
	// KubeAPIQPS and KubeAPIBurst bound the watches of the objects the
	// broker reads (the providers' Secrets and the registry).
	KubeAPIQPS   float64
	KubeAPIBurst int
	// TokenReviewQPS and TokenReviewBurst bound the TokenReviews, one per
	// new sidecar token, on a client of their own: callers who send the
	// broker tokens it must review cannot delay the watches, and the
	// watches cannot delay a sidecar's review.
	TokenReviewQPS   float64
	TokenReviewBurst int
}

// DefaultConfig returns the defaults of gatehouse broker's flags.
func DefaultConfig() Config {
	return Config{
		ListenAddress:    ":8443",
		Registry:         controllers.DefaultBrokerRegistry,
		TokenAudience:    controllers.DefaultBrokerAudience,
		MetricsAddress:   ":8080",
		HealthAddress:    ":8081",
		LogLevel:         "info",
		ShutdownTimeout:  20 * time.Second,
		KubeAPIQPS:       50,
		KubeAPIBurst:     100,
		TokenReviewQPS:   100,
		TokenReviewBurst: 200,
	}
}

// RegisterFlags defines the broker's flags on fs, bound to c.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.ConfigFile, "config", c.ConfigFile, "YAML `file` with identity providers, the one the controller reads (required)")
	fs.StringVar(&c.Namespace, "namespace", c.Namespace, "the broker's own `namespace`, where the providers' client secrets and the registry ConfigMap live (default $POD_NAMESPACE; required)")
	fs.StringVar(&c.ListenAddress, "listen-address", c.ListenAddress, "`address` where sidecars reach the broker over TLS")
	fs.StringVar(&c.TLSCertDir, "tls-cert-dir", c.TLSCertDir, "`directory` with the serving certificate as tls.crt and tls.key, reread when they change (required)")
	fs.StringVar(&c.Registry, "registry", c.Registry, "`name` of the ConfigMap in --namespace where the controller lists each namespace's callback URLs")
	fs.StringVar(&c.TokenAudience, "token-audience", c.TokenAudience, "`audience` the sidecars' projected ServiceAccount tokens must carry")
	fs.StringVar(&c.MetricsAddress, "metrics-address", c.MetricsAddress, "`address` of Prometheus metrics (/metrics)")
	fs.StringVar(&c.HealthAddress, "health-address", c.HealthAddress, "`address` of /healthz and /readyz")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "kubeconfig `file` when not running in a cluster (default $KUBECONFIG)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "`level`: debug, info, warn or error")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long SIGTERM waits for in-flight requests to finish")
	fs.Float64Var(&c.KubeAPIQPS, "kube-api-qps", c.KubeAPIQPS, "requests per `second` to the API server for the watches of the client secrets and the registry; 0 or less turns the client-side limit off")
	fs.IntVar(&c.KubeAPIBurst, "kube-api-burst", c.KubeAPIBurst, "`requests` to the API server allowed in a burst above --kube-api-qps")
	fs.Float64Var(&c.TokenReviewQPS, "token-review-qps", c.TokenReviewQPS, "TokenReviews per `second`, on a client of their own apart from the watches; 0 or less turns the client-side limit off")
	fs.IntVar(&c.TokenReviewBurst, "token-review-burst", c.TokenReviewBurst, "TokenReview `requests` allowed in a burst above --token-review-qps")
}

// Validate checks c without touching files or the network, and reports
// every problem at once, each naming its flag.
func (c Config) Validate() error {
	var errs []error
	if c.ConfigFile == "" {
		errs = append(errs, errors.New("--config: required: the providers file the controller reads"))
	}
	if c.Namespace == "" {
		errs = append(errs, errors.New("--namespace: required when $POD_NAMESPACE is not set"))
	} else if msgs := validation.IsDNS1123Label(c.Namespace); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--namespace: %q is not a namespace name", c.Namespace))
	}
	if c.TLSCertDir == "" {
		errs = append(errs, errors.New("--tls-cert-dir: required: the directory with tls.crt and tls.key"))
	}
	if c.Registry == "" {
		errs = append(errs, errors.New("--registry: required"))
	} else if msgs := validation.IsDNS1123Subdomain(c.Registry); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--registry: %q is not a ConfigMap name", c.Registry))
	}
	if c.TokenAudience == "" {
		errs = append(errs, errors.New("--token-audience: required"))
	}
	seen := map[string]string{}
	for _, a := range []struct{ flag, addr string }{
		{"listen-address", c.ListenAddress},
		{"metrics-address", c.MetricsAddress},
		{"health-address", c.HealthAddress},
	} {
		_, port, err := net.SplitHostPort(a.addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %q is not host:port", a.flag, a.addr))
			continue
		}
		if other, ok := seen[a.addr]; ok && port != "0" {
			errs = append(errs, fmt.Errorf("--%s: %q is --%s's address too", a.flag, a.addr, other))
		}
		seen[a.addr] = a.flag
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("--shutdown-timeout: %s is negative", c.ShutdownTimeout))
	}
	if c.KubeAPIQPS > 0 && c.KubeAPIBurst < 1 {
		errs = append(errs, fmt.Errorf("--kube-api-burst: %d; at least 1 when --kube-api-qps is set", c.KubeAPIBurst))
	}
	if c.TokenReviewQPS > 0 && c.TokenReviewBurst < 1 {
		errs = append(errs, fmt.Errorf("--token-review-burst: %d; at least 1 when --token-review-qps is set", c.TokenReviewBurst))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("--log-level: %q is not debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}
