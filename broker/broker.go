// Package broker is gatehouse broker, the token broker: it keeps the client
// secrets of providers in broker mode (clientSecretMode: broker) in
// Gatehouse's namespace and makes the sidecars' token requests for them.
//
// A sidecar of such a provider holds no client secret. It sends its code
// exchange, refresh and revocation, as a public client would, to
// /v1/providers/{provider}/token or /revoke over TLS, with its Pod's
// projected ServiceAccount token as bearer. The broker authenticates the
// token with a TokenReview (only short-lived tokens bound to a Pod pass),
// checks that the provider serves the token's namespace and that a code
// exchange's redirect_uri is one the controller registered for that
// namespace, then forwards the request to the IdP with the client's
// credentials and relays the IdP's answer unchanged. The
// credentials are the client secret, or, for a provider with clientKeyRef,
// a client assertion the broker signs with the provider's private key
// (private_key_jwt, OIDC Core 9), so that no shared secret exists at all.
//
// It owns the broker's HTTP API, the caller checks and the client
// authentication at the IdP. It does not own the providers file or the
// registry ConfigMap (the controller writes the registry, the chart the
// file), does not verify or look into the tokens the IdP issues, and stores
// no tokens: it remembers only which ServiceAccount token hashes the API
// server recently vouched for or refused.
package broker

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	authenticationv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

// Deps are the process-level things New does not make itself.
type Deps struct {
	// Log receives structured logs; nil discards them.
	Log *slog.Logger
	// RESTConfig reaches the API server (required).
	RESTConfig *rest.Config
	// Now is the clock of the review cache and of discovery retries; nil
	// means time.Now.
	Now func() time.Time
	// HTTPClient talks to the IdPs; nil means a client with a 15s timeout.
	HTTPClient *http.Client
}

// Server is a configured broker. Its state is built once by New; the
// client secrets, client keys and the registry are read from the
// informers on every request, so a rotated Secret or an updated registry
// applies at once.
type Server struct {
	cfg  Config
	log  *slog.Logger
	now  func() time.Time
	file *controllers.FileConfig
	// idps holds the discovery state of each provider in broker mode.
	idps map[string]*idp
	// keys holds the parsed key of each provider with clientKeyRef.
	keys map[string]*keySlot
	// idpClient discovers; forwardClient sends token and revocation
	// requests and never follows a redirect with the client's
	// credentials.
	idpClient, forwardClient *http.Client
	objects                  *objects
	auth                     *authenticator
	certs                    *certwatcher.CertWatcher
	metrics                  *metrics
	ready                    atomic.Bool
}

// New builds a Server: it reads the providers file and the TLS
// certificate, but makes no request to the API server or an IdP.
// Configuration errors match ErrConfig.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, configError{err}
	}
	if deps.RESTConfig == nil {
		return nil, errors.New("broker: no RESTConfig")
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.HTTPClient == nil {
		deps.HTTPClient = &http.Client{Timeout: idpTimeout}
	}
	file, err := controllers.LoadFile(cfg.ConfigFile)
	if err != nil {
		return nil, configError{err}
	}
	certs, err := certwatcher.New(filepath.Join(cfg.TLSCertDir, "tls.crt"), filepath.Join(cfg.TLSCertDir, "tls.key"))
	if err != nil {
		return nil, configError{fmt.Errorf("--tls-cert-dir: %w", err)}
	}
	watchConfig, reviewConfig := clientConfigs(deps.RESTConfig, cfg)
	cs, err := kubernetes.NewForConfig(watchConfig)
	if err != nil {
		return nil, fmt.Errorf("make the API client: %w", err)
	}
	reviews, err := authenticationv1client.NewForConfig(reviewConfig)
	if err != nil {
		return nil, fmt.Errorf("make the TokenReview client: %w", err)
	}
	forwardClient := *deps.HTTPClient
	forwardClient.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	s := &Server{
		cfg:           cfg,
		log:           deps.Log,
		now:           deps.Now,
		file:          file,
		idps:          map[string]*idp{},
		keys:          map[string]*keySlot{},
		idpClient:     deps.HTTPClient,
		forwardClient: &forwardClient,
		objects:       newObjects(cs, cfg.Namespace, cfg.Registry, brokeredSecrets(file)),
		certs:         certs,
		metrics:       newMetrics(),
	}
	s.auth = newAuthenticator(reviews.TokenReviews(), cfg.TokenAudience, deps.Now,
		func(result string) { s.metrics.reviews.WithLabelValues(result).Inc() })
	for _, p := range file.Providers {
		if p.Brokered() {
			s.idps[p.Name] = &idp{issuer: p.IssuerURL, keyAuth: p.ClientKeyRef != nil}
		}
		if p.Brokered() && p.ClientKeyRef != nil {
			s.keys[p.Name] = &keySlot{}
		}
	}
	return s, nil
}

// clientConfigs are cfg for the watches and for the TokenReviews, each
// with a request budget of its own (--kube-api-qps, --token-review-qps).
// TokenReviews are as many as new tokens, which any Pod that reaches the
// broker can send; with one budget they would delay the watches, and a
// slow watch resync the reviews.
func clientConfigs(cfg *rest.Config, c Config) (watch, review *rest.Config) {
	return limitedConfig(cfg, c.KubeAPIQPS, c.KubeAPIBurst), limitedConfig(cfg, c.TokenReviewQPS, c.TokenReviewBurst)
}

// limitedConfig is a copy of cfg with a token bucket of its own; qps 0 or
// less means no client-side limit.
func limitedConfig(cfg *rest.Config, qps float64, burst int) *rest.Config {
	out := rest.CopyConfig(cfg)
	out.QPS, out.Burst = float32(qps), burst
	out.RateLimiter = nil
	if qps > 0 {
		out.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(out.QPS, out.Burst)
	} else {
		out.QPS = -1 // no client-side limit
	}
	return out
}

// Handler returns the handler of the broker's API.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Run listens on --listen-address, --metrics-address and --health-address
// and serves until ctx ends, then drains in-flight requests for up to
// --shutdown-timeout.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	var lns []net.Listener
	for _, a := range []struct{ flag, addr string }{
		{"listen-address", s.cfg.ListenAddress},
		{"metrics-address", s.cfg.MetricsAddress},
		{"health-address", s.cfg.HealthAddress},
	} {
		ln, err := lc.Listen(ctx, "tcp", a.addr)
		if err != nil {
			for _, l := range lns {
				_ = l.Close()
			}
			return fmt.Errorf("--%s: %w", a.flag, err)
		}
		lns = append(lns, ln)
	}
	return s.Serve(ctx, lns[0], lns[1], lns[2])
}

// Serve is Run on listeners the caller opened: ln for the API (TLS is
// added here), metricsLn and healthLn plain HTTP.
func (s *Server) Serve(ctx context.Context, ln, metricsLn, healthLn net.Listener) error {
	bg, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	go func() {
		if err := s.certs.Start(bg); err != nil {
			s.log.Error("Watching the TLS certificate failed; it is no longer reloaded", "dir", s.cfg.TLSCertDir, "error", err)
		}
	}()
	s.objects.start(bg)
	defer func() {
		stopBackground() // ends the informers, which shutdown waits for
		s.objects.shutdown()
	}()
	if len(s.idps) == 0 {
		s.log.Warn("No provider has clientSecretMode broker; every request will be refused", "config", s.cfg.ConfigFile)
	}
	errorLog := slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	api := &http.Server{
		Handler: s.Handler(),
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: s.certs.GetCertificate,
		},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// The IdP's part alone may take idpTimeout.
		WriteTimeout:   idpTimeout + reviewTimeout + 10*time.Second,
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       errorLog,
	}
	admin := []*http.Server{
		{Handler: s.metrics.handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errorLog},
		{Handler: s.healthHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errorLog},
	}
	errc := make(chan error, 3)
	go func() { errc <- api.ServeTLS(ln, "", "") }()
	go func() { errc <- admin[0].Serve(metricsLn) }()
	go func() { errc <- admin[1].Serve(healthLn) }()
	go func() {
		if s.objects.waitForSync(bg) {
			s.ready.Store(true)
			s.log.Info("Broker ready")
		}
	}()
	s.log.Info("Broker listening", "address", ln.Addr().String(), "metricsAddress", metricsLn.Addr().String(),
		"healthAddress", healthLn.Addr().String(), "namespace", s.cfg.Namespace, "registry", s.cfg.Registry, "providers", len(s.idps))

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	s.ready.Store(false)
	s.log.Info("Shutting down: draining in-flight requests", "timeout", s.cfg.ShutdownTimeout.String())
	drain, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err := api.Shutdown(drain)
	for _, a := range admin {
		_ = a.Close()
	}
	stopBackground()
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", serveErr)
	}
	if err != nil {
		return fmt.Errorf("drain in-flight requests: %w", err)
	}
	s.log.Info("Broker stopped")
	return nil
}

// healthHandler serves /healthz (the process answers) and /readyz (the
// informers have synced and the API listens). Neither depends on an IdP: a
// broker that cannot reach one still refuses and reports correctly.
func (s *Server) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// outcome is what the log line and the metrics of one request say.
type outcome struct {
	op string
	// provider is a configured provider's name, else empty.
	provider string
	caller   caller
	status   int
	err      error
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	o := outcome{op: opOther}
	if err := s.serve(w, r, &o); err != nil {
		o.status, o.err = s.writeError(w, err), err
	}
	d := time.Since(start)
	s.metrics.observe(o.caller.Namespace, o.provider, o.op, o.status, d)
	// Every request is an Info line, successes too: it is the audit trail
	// of which namespace used the shared client for what.
	level := slog.LevelInfo
	if o.status >= 500 {
		level = slog.LevelError
	}
	attrs := []any{
		"namespace", o.caller.Namespace, "pod", o.caller.Pod, "serviceAccount", o.caller.ServiceAccount,
		"provider", o.provider, "operation", o.op, "status", o.status, "duration", d.String(),
	}
	if o.err != nil {
		attrs = append(attrs, "error", o.err.Error())
	}
	s.log.Log(r.Context(), level, "Broker request", attrs...)
}

// serve answers one request; o collects what is logged. It returns the
// broker's own refusals; the IdP's answers, errors included, are written
// here.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, o *outcome) error {
	ctx := r.Context()
	name, endpoint, ok := route(r.URL.EscapedPath())
	if !ok {
		return errNotFound
	}
	if endpoint == endpointRevoke {
		o.op = OpRevoke
	}
	if _, known := s.file.Provider(name); known {
		o.provider = name
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return &refusal{status: http.StatusMethodNotAllowed, code: "invalid_request", description: "use POST"}
	}
	token, ok := bearerToken(r)
	if !ok {
		return errNoBearer
	}
	who, err := s.auth.authenticate(ctx, token)
	if err != nil {
		return err
	}
	o.caller = who
	p, err := providerFor(s.file, name, who.Namespace)
	if err != nil {
		return err
	}
	form, err := readForm(w, r)
	if err != nil {
		return err
	}
	c, err := parseCall(endpoint, form)
	if err != nil {
		return err
	}
	o.op = c.op
	var registry map[string]string
	if c.op == OpExchange {
		if registry, err = s.registry(); err != nil {
			return err
		}
	}
	if err := checkCall(name, p, who.Namespace, c, registry); err != nil {
		return err
	}
	ep, err := s.endpoints(ctx, s.idps[name])
	if err != nil {
		return err
	}
	target := ep.token
	if c.op == OpRevoke {
		if ep.revocation.url == "" {
			// RFC 7009 2.2.1: the IdP supports revoking no token type.
			// Answering 200 would tell the sidecar a token is dead that is
			// not.
			return &refusal{status: http.StatusNotFound, code: "unsupported_token_type", description: "the identity provider has no revocation endpoint"}
		}
		target = ep.revocation
	}
	auth, err := s.clientAuth(p, target, ep.token.url)
	if err != nil {
		return err
	}
	ans, err := s.forward(ctx, target.url, c, auth)
	if err != nil {
		return err
	}
	if ans.contentType != "" {
		w.Header().Set("Content-Type", ans.contentType)
	}
	// RFC 6749 5.1: responses with tokens are not to be cached.
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(ans.status)
	_, _ = w.Write(ans.body)
	o.status = ans.status
	return nil
}

// errNoBearer refuses a request without a bearer token.
var errNoBearer = unauthenticated("a bearer token (the Pod's projected ServiceAccount token) is required", nil)

// writeError answers err as JSON and returns the status.
func (s *Server) writeError(w http.ResponseWriter, err error) int {
	r, ok := errors.AsType[*refusal](err)
	if !ok {
		r = &refusal{status: http.StatusInternalServerError, code: "server_error", description: "internal error"}
	}
	if r.status == http.StatusUnauthorized {
		// RFC 6750 3: the error attribute only when a token was sent.
		if errors.Is(err, errNoBearer) {
			w.Header().Set("WWW-Authenticate", "Bearer")
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(r.status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": r.code, "error_description": r.description})
	return r.status
}

// registry returns the registry ConfigMap's data; nil when it does not
// exist (no namespace is registered).
func (s *Server) registry() (map[string]string, error) {
	cm, err := s.objects.registryMap()
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, unavailable("the broker registry cannot be read", err)
	}
	return cm.Data, nil
}

// clientAuth makes provider p's client authentication for a request to
// endpoint at: a client assertion signed with its key when it has
// clientKeyRef (never a secret then), else its client secret. A key the
// IdP's discovery says it cannot take is a 503 like any other unusable
// credential: the sidecar did nothing wrong, and the operator must act.
func (s *Server) clientAuth(p *controllers.Provider, at endpoint, tokenEndpoint string) (clientAuth, error) {
	if p.ClientKeyRef == nil {
		secret, err := s.clientSecret(p)
		if err != nil {
			return clientAuth{}, err
		}
		return clientAuth{style: at.secretAuth, clientID: p.ClientID, secret: secret}, nil
	}
	key, err := s.clientKey(p)
	if err != nil {
		return clientAuth{}, err
	}
	if err := acceptsKey(at, key.alg); err != nil {
		return clientAuth{}, unavailable("the identity provider cannot accept the client key", err)
	}
	assertion, err := key.assertion(p.ClientID, tokenEndpoint, s.now())
	if err != nil {
		return clientAuth{}, fmt.Errorf("sign the client assertion: %w", err)
	}
	return clientAuth{style: authPrivateKeyJWT, clientID: p.ClientID, assertion: assertion}, nil
}

// clientSecret reads provider p's client secret from its Secret in the
// broker's namespace.
func (s *Server) clientSecret(p *controllers.Provider) (string, error) {
	ref := p.ClientSecretRef
	sec, err := s.objects.secret(ref.Name)
	if err != nil {
		return "", unavailable("the client secret cannot be read", fmt.Errorf("secret %s/%s: %w", s.cfg.Namespace, ref.Name, err))
	}
	v := sec.Data[ref.Key]
	if len(v) == 0 {
		return "", unavailable("the client secret cannot be read", fmt.Errorf("secret %s/%s has no key %q", s.cfg.Namespace, ref.Name, ref.Key))
	}
	return string(v), nil
}
