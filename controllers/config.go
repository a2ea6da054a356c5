// Package controllers is Gatehouse's Kubernetes half: it turns
// gatehouse.dev/enabled on an Ingress into a Gatehouse sidecar in every Pod
// behind it (a mutating admission webhook for Pods), keeps a per-Ingress
// Secret with the sidecar's files, replaces Pods created before the
// annotation, and reports problems as Events on the Ingress.
//
// It never writes users' Ingresses, Services or workloads. From the proxy
// tree it imports only the proxy root: each sidecar's settings are a
// proxy.Config that passes the sidecar's own Validate before it is rendered
// as flags.
package controllers

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// Config is the controller's process configuration (flags).
type Config struct {
	ConfigFile     string
	SidecarImage   string
	WebhookPort    int
	WebhookCertDir string
	// WebhookService and WebhookConfiguration name the webhook's Service
	// (for the self-made certificate) and MutatingWebhookConfiguration (for
	// its caBundle).
	WebhookService       string
	WebhookConfiguration string
	// WebhookURL, when set, is where the API server reaches a controller
	// running outside the cluster: the self-made certificate covers its
	// host and the webhook configuration points at it.
	WebhookURL     string
	MetricsAddress string
	HealthAddress  string
	LeaderElect    bool
	Namespace      string
	Kubeconfig     string
	LogLevel       string
	// SecretRetention is how long a per-Ingress Secret that nothing needs
	// any more is kept, so that a recreated Ingress adopts it.
	SecretRetention time.Duration
	// KubeAPIQPS and KubeAPIBurst bound the requests per second all of the
	// controller's clients make to the API server together.
	KubeAPIQPS   float64
	KubeAPIBurst int
	// BrokerURL is where sidecars reach gatehouse broker (the chart's
	// Service); providers in broker mode need it.
	BrokerURL string
	// BrokerTLSSecret, in the controller's namespace, holds the broker's
	// serving certificate: the controller issues it from its own CA when it
	// makes the webhook's certificate itself, and copies its ca.crt into
	// the Secrets of brokered front doors.
	BrokerTLSSecret string
	// BrokerRegistry is the ConfigMap, in the controller's namespace,
	// where the controller lists each namespace's callback URLs for the
	// broker.
	BrokerRegistry string
	// BrokerAudience is the audience of the sidecars' projected tokens.
	BrokerAudience string
}

// DefaultConfig returns the defaults of DESIGN.md "Controller flags".
func DefaultConfig() Config {
	return Config{
		WebhookPort:          9443,
		WebhookService:       "gatehouse-webhook",
		WebhookConfiguration: "gatehouse",
		MetricsAddress:       ":8080",
		HealthAddress:        ":8081",
		LeaderElect:          true,
		LogLevel:             "info",
		SecretRetention:      time.Hour,
		KubeAPIQPS:           DefaultKubeAPIQPS,
		KubeAPIBurst:         DefaultKubeAPIBurst,
		BrokerTLSSecret:      "gatehouse-broker-tls",
		BrokerRegistry:       DefaultBrokerRegistry,
		BrokerAudience:       DefaultBrokerAudience,
	}
}

// RegisterFlags defines the controller's flags on fs, bound to c.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.ConfigFile, "config", c.ConfigFile, "YAML `file` with identity providers and defaults (the chart renders it) (required)")
	fs.StringVar(&c.SidecarImage, "sidecar-image", c.SidecarImage, "`image` injected as the sidecar (default the controller's own image, from $GATEHOUSE_IMAGE)")
	fs.IntVar(&c.WebhookPort, "webhook-port", c.WebhookPort, "`port` of the Pod mutating webhook")
	fs.StringVar(&c.WebhookCertDir, "webhook-cert-dir", c.WebhookCertDir, "`directory` with tls.crt and tls.key for the webhook; empty makes and rotates a self-signed certificate and keeps the webhook's caBundle current")
	fs.StringVar(&c.WebhookService, "webhook-service", c.WebhookService, "`name` of the webhook's Service, for the self-made certificate's names")
	fs.StringVar(&c.WebhookConfiguration, "webhook-configuration", c.WebhookConfiguration, "`name` of the MutatingWebhookConfiguration whose caBundle the controller keeps current with a self-made certificate")
	fs.StringVar(&c.WebhookURL, "webhook-url", c.WebhookURL, "https `URL` at which the API server reaches the webhook when the controller runs outside the cluster (development only); the self-made certificate covers its host and the webhook configuration is pointed at it instead of the Service; a controller started later without the flag points it back at the Service")
	fs.StringVar(&c.MetricsAddress, "metrics-address", c.MetricsAddress, "`address` of Prometheus metrics")
	fs.StringVar(&c.HealthAddress, "health-address", c.HealthAddress, "`address` of /healthz and /readyz")
	fs.BoolVar(&c.LeaderElect, "leader-elect", c.LeaderElect, "one active replica at a time")
	fs.StringVar(&c.Namespace, "namespace", c.Namespace, "the controller's own `namespace`, where provider Secrets live (default $POD_NAMESPACE)")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "kubeconfig `file` when not running in a cluster (default $KUBECONFIG)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "`level`: debug, info, warn or error")
	fs.Float64Var(&c.KubeAPIQPS, "kube-api-qps", c.KubeAPIQPS, "requests per `second` to the API server, all of the controller's clients together (client-go's default of 5 is too few for a cluster of thousands of Pods; the API server's Priority and Fairness still applies); 0 or less turns the client-side limit off")
	fs.IntVar(&c.KubeAPIBurst, "kube-api-burst", c.KubeAPIBurst, "`requests` to the API server allowed in a burst above --kube-api-qps")
	fs.StringVar(&c.BrokerURL, "broker-url", c.BrokerURL, "https `URL` at which sidecars reach gatehouse broker, e.g. https://gatehouse-broker.gatehouse.svc; required by providers with clientSecretMode broker")
	fs.StringVar(&c.BrokerTLSSecret, "broker-tls-secret", c.BrokerTLSSecret, "`name` of the Secret in --namespace with the broker's serving certificate; issued and renewed by the controller unless --webhook-cert-dir is set, and its ca.crt is what sidecars trust")
	fs.StringVar(&c.BrokerRegistry, "broker-registry", c.BrokerRegistry, "`name` of the ConfigMap in --namespace where the controller lists, per namespace, the callback URLs the broker may exchange codes for")
	fs.StringVar(&c.BrokerAudience, "broker-token-audience", c.BrokerAudience, "`audience` of the projected ServiceAccount tokens sidecars show the broker")
	fs.DurationVar(&c.SecretRetention, "secret-retention", c.SecretRetention, "how long the Secret of a deleted or disabled Ingress is kept once no Pod mounts it, so that the Ingress recreated under the same name (a GitOps delete and recreate) keeps its cookie secret and nobody is logged out")
}

// Validate checks c without touching files or the network.
func (c Config) Validate() error {
	var errs []error
	if c.ConfigFile == "" {
		errs = append(errs, errors.New("--config: required: the providers file the chart renders"))
	}
	if c.SidecarImage == "" {
		errs = append(errs, errors.New("--sidecar-image: required when $GATEHOUSE_IMAGE is not set"))
	}
	if c.WebhookPort <= 0 || c.WebhookPort > 65535 {
		errs = append(errs, fmt.Errorf("--webhook-port: %d is not a port", c.WebhookPort))
	}
	if c.WebhookURL != "" {
		if u, err := url.Parse(c.WebhookURL); err != nil || u.Scheme != "https" || u.Hostname() == "" {
			errs = append(errs, fmt.Errorf("--webhook-url: %q is not an https URL", c.WebhookURL))
		}
	}
	for name, addr := range map[string]string{"metrics-address": c.MetricsAddress, "health-address": c.HealthAddress} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("--%s: %q is not host:port", name, addr))
		}
	}
	if c.KubeAPIQPS > 0 && c.KubeAPIBurst < 1 {
		errs = append(errs, fmt.Errorf("--kube-api-burst: %d; at least 1 when --kube-api-qps is set", c.KubeAPIBurst))
	}
	if c.BrokerURL != "" {
		if u, err := url.Parse(c.BrokerURL); err != nil || u.Scheme != "https" || u.Hostname() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			errs = append(errs, fmt.Errorf("--broker-url: %q is not an https URL without a path", c.BrokerURL))
		}
		if c.BrokerTLSSecret == "" || c.BrokerRegistry == "" || c.BrokerAudience == "" {
			errs = append(errs, errors.New("--broker-tls-secret, --broker-registry, --broker-token-audience: required with --broker-url"))
		}
	}
	if c.SecretRetention < 0 {
		errs = append(errs, fmt.Errorf("--secret-retention: %s is negative", c.SecretRetention))
	}
	if c.Namespace == "" {
		errs = append(errs, errors.New("--namespace: required when $POD_NAMESPACE is not set"))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("--log-level: %q is not debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}

// FileConfig is the --config file: identity providers and defaults.
type FileConfig struct {
	Providers []Provider `json:"providers"`
	Defaults  Defaults   `json:"defaults"`
}

// Provider is an identity provider the platform team configured.
type Provider struct {
	Name            string        `json:"name"`
	IssuerURL       string        `json:"issuerURL"`
	ClientID        string        `json:"clientID"`
	ClientSecretRef *SecretKeyRef `json:"clientSecretRef,omitempty"`
	Scopes          []string      `json:"scopes,omitempty"`
	GroupsClaim     string        `json:"groupsClaim,omitempty"`
	// LogoutRedirect is the sidecars' --logout-redirect: local (the
	// default) or idp, which also ends the session at the IdP.
	LogoutRedirect    string        `json:"logoutRedirect,omitempty"`
	AllowedNamespaces []string      `json:"allowedNamespaces,omitempty"`
	SessionStore      *SessionStore `json:"sessionStore,omitempty"`
	// ClientSecretMode says how sidecars reach the client secret: copy
	// (the default in this file) puts it in every namespace's Secret;
	// broker keeps it in Gatehouse's namespace, and the sidecars' code
	// exchange, refresh and revocation go through gatehouse broker.
	ClientSecretMode string `json:"clientSecretMode,omitempty"`
	// ClientKeyRef names a PEM private key (PKCS #8, PKCS #1 RSA or SEC 1
	// EC) with which gatehouse broker authenticates the client by
	// private_key_jwt (OIDC Core 9, RFC 7523 2.2) instead of a client
	// secret. Only the broker reads it, so it needs clientSecretMode
	// broker, and it replaces clientSecretRef.
	ClientKeyRef *SecretKeyRef `json:"clientKeyRef,omitempty"`
	// ClientKeyID is the kid of the broker's client assertions; empty
	// means the RFC 7638 thumbprint of the key's public half.
	ClientKeyID string `json:"clientKeyID,omitempty"`
}

// Client secret modes of a provider.
const (
	ClientSecretModeCopy   = "copy"
	ClientSecretModeBroker = "broker"
)

// Brokered reports whether the provider's sidecars go through the token
// broker.
func (p *Provider) Brokered() bool { return p.ClientSecretMode == ClientSecretModeBroker }

// SecretKeyRef names a key of a Secret in the controller's namespace.
type SecretKeyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// SessionStore selects the Redis session store for a provider's sidecars.
type SessionStore struct {
	RedisURL          string        `json:"redisURL"`
	PasswordSecretRef *SecretKeyRef `json:"passwordSecretRef,omitempty"`
	// NamespaceUsers gives every namespace a Redis user of its own,
	// limited to its keys (gatehouse:<namespace>:), instead of a copy of
	// the password: the controller makes the users with the password of
	// passwordSecretRef (and the URL's user, if any), which must be
	// allowed ACL SETUSER, DELUSER and USERS, and only the namespace's
	// user and password reach the namespace.
	NamespaceUsers bool `json:"namespaceUsers,omitempty"`
}

// Defaults apply to every Ingress unless an annotation says otherwise.
type Defaults struct {
	Provider   string          `json:"provider"`
	PathPrefix string          `json:"pathPrefix,omitempty"`
	Sidecar    SidecarDefaults `json:"sidecar,omitempty"`
}

// SidecarDefaults shape the injected container.
type SidecarDefaults struct {
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// ResourceBounds limit what gatehouse.dev/sidecar-resources on an
	// Ingress or Namespace may ask for.
	ResourceBounds *ResourceBounds `json:"resourceBounds,omitempty"`
}

// ResourceBounds are the least and most a sidecar's requests and limits
// may be.
type ResourceBounds struct {
	Min corev1.ResourceList `json:"min,omitempty"`
	Max corev1.ResourceList `json:"max,omitempty"`
}

// LoadFile reads and checks the --config file. Unknown keys are errors.
func LoadFile(path string) (*FileConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	return ParseFile(b)
}

// ParseFile parses and checks a --config file's content.
func ParseFile(b []byte) (*FileConfig, error) {
	var fc FileConfig
	if err := yaml.UnmarshalStrict(b, &fc); err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	if fc.Defaults.PathPrefix == "" {
		fc.Defaults.PathPrefix = "/_gatehouse"
	}
	if err := fc.validate(); err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	return &fc, nil
}

func (fc *FileConfig) validate() error {
	var errs []error
	seen := map[string]bool{}
	for i, p := range fc.Providers {
		where := fmt.Sprintf("providers[%d]", i)
		if p.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: required", where))
		} else if seen[p.Name] {
			errs = append(errs, fmt.Errorf("%s.name: %q is used twice", where, p.Name))
		}
		seen[p.Name] = true
		if err := checkIssuer(p.IssuerURL); err != nil {
			errs = append(errs, fmt.Errorf("%s.issuerURL: %w", where, err))
		}
		if p.ClientID == "" {
			errs = append(errs, fmt.Errorf("%s.clientID: required", where))
		}
		switch p.LogoutRedirect {
		case "", "local", "idp":
		default:
			errs = append(errs, fmt.Errorf("%s.logoutRedirect: %q is not local or idp", where, p.LogoutRedirect))
		}
		switch p.ClientSecretMode {
		case "", ClientSecretModeCopy:
		case ClientSecretModeBroker:
			if p.ClientSecretRef == nil && p.ClientKeyRef == nil {
				errs = append(errs, fmt.Errorf("%s.clientSecretMode: broker needs clientSecretRef or clientKeyRef: a public client has no credential to keep", where))
			}
		default:
			errs = append(errs, fmt.Errorf("%s.clientSecretMode: %q is not copy or broker", where, p.ClientSecretMode))
		}
		if r := p.ClientSecretRef; r != nil && (r.Name == "" || r.Key == "") {
			errs = append(errs, fmt.Errorf("%s.clientSecretRef: name and key are required", where))
		}
		errs = append(errs, p.checkClientKey(where)...)
		if ss := p.SessionStore; ss != nil {
			if ss.RedisURL == "" {
				errs = append(errs, fmt.Errorf("%s.sessionStore.redisURL: required", where))
			}
			if r := ss.PasswordSecretRef; r != nil && (r.Name == "" || r.Key == "") {
				errs = append(errs, fmt.Errorf("%s.sessionStore.passwordSecretRef: name and key are required", where))
			}
			if ss.NamespaceUsers && ss.PasswordSecretRef == nil {
				errs = append(errs, fmt.Errorf("%s.sessionStore.namespaceUsers: needs passwordSecretRef, the credential that makes the users", where))
			}
		}
	}
	if fc.Defaults.Provider != "" && !seen[fc.Defaults.Provider] {
		errs = append(errs, fmt.Errorf("defaults.provider: %q is not a configured provider", fc.Defaults.Provider))
	}
	return errors.Join(errs...)
}

// checkClientKey checks clientKeyRef and clientKeyID. Only the broker
// signs client assertions: a sidecar never holds the key, so the key needs
// broker mode. A provider authenticates with one credential, so a key and
// a client secret together are refused rather than one silently ignored.
func (p *Provider) checkClientKey(where string) []error {
	var errs []error
	r := p.ClientKeyRef
	if r == nil {
		if p.ClientKeyID != "" {
			errs = append(errs, fmt.Errorf("%s.clientKeyID: needs clientKeyRef", where))
		}
		return errs
	}
	if r.Name == "" || r.Key == "" {
		errs = append(errs, fmt.Errorf("%s.clientKeyRef: name and key are required", where))
	}
	if !p.Brokered() {
		errs = append(errs, fmt.Errorf("%s.clientKeyRef: needs clientSecretMode broker: only gatehouse broker signs with the key, sidecars never hold it", where))
	}
	if p.ClientSecretRef != nil {
		errs = append(errs, fmt.Errorf("%s.clientKeyRef: clientSecretRef is set too; a provider authenticates with one credential, so keep one of them", where))
	}
	return errs
}

// checkIssuer accepts https issuers, and http only on loopback addresses
// (development).
func checkIssuer(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
		return fmt.Errorf("%q must use https (http only on loopback addresses, for development)", raw)
	default:
		return fmt.Errorf("%q must be an https URL", raw)
	}
}

// Provider returns the named provider.
func (fc *FileConfig) Provider(name string) (*Provider, bool) {
	i := slices.IndexFunc(fc.Providers, func(p Provider) bool { return p.Name == name })
	if i < 0 {
		return nil, false
	}
	return &fc.Providers[i], true
}

// CheckBroker reports providers in broker mode when no broker URL is
// configured: their sidecars would have no way to the client secret.
func (fc *FileConfig) CheckBroker(brokerURL string) error {
	if brokerURL != "" {
		return nil
	}
	var errs []error
	for _, p := range fc.Providers {
		if p.Brokered() {
			errs = append(errs, fmt.Errorf("--broker-url: required: provider %q has clientSecretMode broker (set the broker's URL, or clientSecretMode copy)", p.Name))
		}
	}
	return errors.Join(errs...)
}

// Allows reports whether the provider may be used from namespace ns: one
// listed in allowedNamespaces, or any with "*". An empty list allows none:
// a shared client is opened to namespaces on purpose, never by default.
func (p *Provider) Allows(ns string) bool {
	return slices.Contains(p.AllowedNamespaces, "*") || slices.Contains(p.AllowedNamespaces, ns)
}
