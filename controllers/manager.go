package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Options are the process-level things the manager does not make itself.
type Options struct {
	// RESTConfig reaches the API server.
	RESTConfig *rest.Config
	// Log is the controller's logger.
	Log logr.Logger
	// WebhookHost binds the webhook server (tests use 127.0.0.1).
	WebhookHost string
	// HTTPClient fetches providers' discovery documents.
	HTTPClient *http.Client
}

// NewManager builds the controller-runtime manager with the Ingress
// reconciler, the Pod webhook, the provider checker and health probes. It
// does not start it.
func NewManager(cfg Config, file *FileConfig, opts Options) (ctrl.Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	routes, err := gatewayAPIInstalled(opts.RESTConfig)
	if err != nil {
		return nil, err
	}
	if routes {
		if err := gatewayv1.Install(scheme); err != nil {
			return nil, err
		}
	}
	cacheOpts, err := cacheOptions(cfg.Namespace, file, cfg.BrokerTLSSecret)
	if err != nil {
		return nil, err
	}
	m := newMetrics(crmetrics.Registry)
	certificateExpiry(crmetrics.Registry, cfg.WebhookCertDir)
	checker := &providerChecker{file: file, client: opts.HTTPClient, metrics: m, log: opts.Log.WithName("providers")}
	mgr, err := ctrl.NewManager(clientConfig(opts.RESTConfig, cfg), ctrl.Options{
		Scheme: scheme,
		Logger: opts.Log,
		Metrics: metricsserver.Options{BindAddress: cfg.MetricsAddress, ExtraHandlers: map[string]http.Handler{
			"/providers": http.HandlerFunc(checker.serveStatus),
		}},
		HealthProbeBindAddress:  cfg.HealthAddress,
		LeaderElection:          cfg.LeaderElect,
		LeaderElectionID:        "gatehouse-controller",
		LeaderElectionNamespace: cfg.Namespace,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    opts.WebhookHost,
			Port:    cfg.WebhookPort,
			CertDir: cfg.WebhookCertDir,
		}),
		Cache: cacheOpts,
	})
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &networkingv1.Ingress{}, indexBackendService, backendServiceNames); err != nil {
		return nil, fmt.Errorf("index ingresses: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &corev1.Service{}, indexServiceSelector, selectorPairs); err != nil {
		return nil, fmt.Errorf("index services: %w", err)
	}
	for name, fn := range map[string]client.IndexerFunc{indexPodIngress: podIngress, indexPodSecret: podSecrets, indexPodOwner: podOwner} {
		if err := mgr.GetFieldIndexer().IndexField(context.Background(), &corev1.Pod{}, name, fn); err != nil {
			return nil, fmt.Errorf("index pods: %w", err)
		}
	}
	if routes {
		if err := mgr.GetFieldIndexer().IndexField(context.Background(), &gatewayv1.HTTPRoute{}, indexRouteBackend, routeBackendKeys); err != nil {
			return nil, fmt.Errorf("index httproutes: %w", err)
		}
	} else {
		opts.Log.Info("Gateway API not installed: HTTPRoutes are not watched; restart the controller after installing its CRDs")
	}
	res := &resolver{
		routes:    routes,
		reader:    mgr.GetClient(),
		apiReader: mgr.GetAPIReader(),
		file:      file,
		namespace: cfg.Namespace,
		image:     cfg.SidecarImage,
		broker:    brokerSettings{url: cfg.BrokerURL, tlsSecret: cfg.BrokerTLSSecret, audience: cfg.BrokerAudience},
	}
	redisUsersOf := &redisUsers{}
	scope := &scopeKeeper{
		reader:      mgr.GetClient(),
		apiReader:   mgr.GetAPIReader(),
		writer:      mgr.GetClient(),
		webhookName: cfg.WebhookConfiguration,
		namespace:   cfg.Namespace,
		routes:      routes,
		resolver:    res,
		redis:       redisUsersOf,
		log:         opts.Log.WithName("webhook-scope"),
	}
	if err := scope.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("register webhook scope: %w", err)
	}
	var signer *registrySigner
	if cfg.BrokerURL != "" {
		signer = &registrySigner{reader: mgr.GetAPIReader(), writer: mgr.GetClient(), namespace: cfg.Namespace, name: cfg.BrokerRegistry + "-key"}
	}
	rec := &IngressReconciler{
		client:          mgr.GetClient(),
		apiReader:       mgr.GetAPIReader(),
		resolver:        res,
		recorder:        mgr.GetEventRecorder("gatehouse"),
		metrics:         m,
		scope:           scope,
		redis:           redisUsersOf,
		registry:        signer,
		secretRetention: cfg.SecretRetention,
		now:             time.Now,
	}
	if err := rec.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("register ingress reconciler: %w", err)
	}
	if routes {
		if err := (&RouteReconciler{IngressReconciler: rec}).SetupWithManager(mgr); err != nil {
			return nil, fmt.Errorf("register httproute reconciler: %w", err)
		}
	}
	if cfg.BrokerURL != "" {
		keeper := &registryKeeper{
			reader: mgr.GetClient(), apiReader: mgr.GetAPIReader(), writer: mgr.GetClient(),
			namespace: cfg.Namespace, name: cfg.BrokerRegistry, signer: signer,
		}
		if err := keeper.SetupWithManager(mgr); err != nil {
			return nil, fmt.Errorf("register broker registry: %w", err)
		}
	}
	mgr.GetWebhookServer().Register(WebhookPath, &webhook.Admission{Handler: &PodInjector{
		resolver: res,
		decoder:  admission.NewDecoder(scheme),
		metrics:  m,
	}})
	if err := mgr.Add(checker); err != nil {
		return nil, err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	// Ready once the webhook serves and the caches are synced; a broken
	// provider is reported, not a reason to stop admitting Pods.
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("informers", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return errors.New("informer caches not synced")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return mgr, nil
}

// gatewayAPIInstalled asks the API server whether it serves
// gateway.networking.k8s.io/v1 HTTPRoutes. The answer is taken once, at
// start: CRDs installed later need a restart of the controller.
func gatewayAPIInstalled(cfg *rest.Config) (bool, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return false, err
	}
	list, err := dc.ServerResourcesForGroupVersion(gatewayv1.GroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover the Gateway API: %w", err)
	}
	return slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Kind == KindHTTPRoute }), nil
}

// Run builds the manager and runs it until ctx ends. Without
// --webhook-cert-dir it first makes (or reads) the webhook's certificate,
// so the webhook server starts with one, and keeps renewing it.
func Run(ctx context.Context, cfg Config, opts Options) error {
	file, err := LoadFile(cfg.ConfigFile)
	if err != nil {
		return err
	}
	if err := file.CheckBroker(cfg.BrokerURL); err != nil {
		return err
	}
	selfSigned := cfg.WebhookCertDir == ""
	if selfSigned {
		dir, err := os.MkdirTemp("", "gatehouse-webhook-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.WebhookCertDir = dir
	}
	mgr, err := NewManager(cfg, file, opts)
	if err != nil {
		return err
	}
	if selfSigned {
		cm := newCertManager(mgr.GetAPIReader(), mgr.GetClient(), WebhookCertOptions{
			Namespace: cfg.Namespace, SecretName: cfg.WebhookService + "-tls",
			Service: cfg.WebhookService, Configuration: cfg.WebhookConfiguration, URL: cfg.WebhookURL, Dir: cfg.WebhookCertDir,
		}, opts.Log.WithName("webhook-certs"))
		if err := cm.sync(ctx); err != nil {
			return fmt.Errorf("webhook certificate: %w", err)
		}
		if err := mgr.Add(cm); err != nil {
			return err
		}
		if cfg.BrokerURL != "" {
			u, _ := url.Parse(cfg.BrokerURL) // checked by Validate
			bc := &brokerCerts{
				reader: mgr.GetAPIReader(), client: mgr.GetClient(), namespace: cfg.Namespace,
				caSecret: cfg.WebhookService + "-tls", secret: cfg.BrokerTLSSecret, host: u.Hostname(),
				log: opts.Log.WithName("broker-certs"), now: time.Now,
			}
			if err := bc.sync(ctx); err != nil {
				return fmt.Errorf("broker certificate: %w", err)
			}
			if err := mgr.Add(bc); err != nil {
				return err
			}
		}
	}
	for _, p := range file.Providers {
		if ss := p.SessionStore; ss != nil && ss.PasswordSecretRef != nil && !ss.NamespaceUsers {
			opts.Log.Info("Warning: the provider's Redis password is copied into every namespace that uses it; set sessionStore.namespaceUsers to give each namespace a Redis user of its own", "provider", p.Name)
		}
	}
	opts.Log.Info("Starting gatehouse controller", "providers", len(file.Providers), "namespace", cfg.Namespace)
	return mgr.Start(ctx)
}
