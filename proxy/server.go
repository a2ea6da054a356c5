// Package proxy is the Gatehouse sidecar: an OpenID Connect authenticating
// reverse proxy in front of one app.
//
// Its public face is small: Config (flags, environment, file, validation),
// New and Server.Run. The OIDC flow, sessions, authorization, redirects and
// identity assertions live in internal packages. The proxy never talks to the
// Kubernetes API server.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/authz"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/identity"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/oidcflow"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session/cookiestore"
	"github.com/gatehouse-dev/gatehouse/proxy/internal/session/redisstore"
)

// Deps are the process-level things New does not make itself.
type Deps struct {
	// Log receives structured logs; nil discards them.
	Log *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// HTTPClient talks to the IdP; nil means a client with a 15s timeout.
	HTTPClient *http.Client
}

// Server is a configured proxy. Its state is built once by New and never
// changes, except the policy, which a --config reload swaps atomically.
type Server struct {
	cfg        Config
	log        *slog.Logger
	now        func() time.Time
	upstream   *url.URL
	cookieName string
	flow       *oidcflow.Flow
	store      session.Store
	// signer follows the cookie secret file (reloadCookieSecrets).
	signer    atomic.Pointer[identity.Signer]
	proxy     *httputil.ReverseProxy
	metrics   *metrics
	policy    atomic.Pointer[authz.Policy]
	ready     atomic.Bool
	refresher *refresher
	// broker carries token requests to gatehouse broker; nil without
	// --broker-url.
	broker *brokerTransport
	// setCodecs installs codecs derived from a new cookie secret file.
	setCodecs  func(session, login []securecookie.Codec)
	closeStore func() error
	// runStore runs the store's background work (the Redis client-side
	// cache's tracking connections) until its context ends.
	runStore func(context.Context)
	// bodyReadTimeout is bodyReadTimeout; tests shorten it.
	bodyReadTimeout time.Duration
}

// New builds a Server from a validated Config: it reads the secret files
// but does no network I/O. Errors about the configuration wrap ErrConfig.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.HTTPClient == nil {
		deps.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	secrets, err := readCookieSecrets(cfg.CookieSecretFile)
	if err != nil {
		return nil, fmt.Errorf("%w: --cookie-secret-file: %w", ErrConfig, err)
	}
	clientSecret, err := readClientSecret(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: --client-secret-file: %w", ErrConfig, err)
	}
	var bt *brokerTransport
	if cfg.BrokerURL != "" {
		if bt, err = newBrokerTransport(cfg.BrokerTokenFile, cfg.BrokerCAFile); err != nil {
			return nil, fmt.Errorf("%w: --broker-ca-file: %w", ErrConfig, err)
		}
	}
	codecs, err := cookiestore.Codecs(secrets, cfg.SessionLifetime)
	if err != nil {
		return nil, fmt.Errorf("%w: --cookie-secret-file: %w", ErrConfig, err)
	}
	loginCodecs, err := cookiestore.Codecs(secrets, oidcflow.LoginWindow)
	if err != nil {
		return nil, fmt.Errorf("%w: --cookie-secret-file: %w", ErrConfig, err)
	}
	policy, err := authz.New(cfg.PolicySpec())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	upstream, _ := parseAbsURL(cfg.Upstream)
	var redirects []*url.URL
	for _, raw := range cfg.RedirectURLs {
		u, _ := parseAbsURL(raw)
		redirects = append(redirects, u)
	}
	// Replicas share the cookie secret, so they derive the same signing
	// key from its first line, and publish the keys of every line.
	signer, err := identity.NewSignerFromSecrets(secrets, deps.Now)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:        cfg,
		log:        deps.Log,
		now:        deps.Now,
		upstream:   upstream,
		cookieName: cfg.EffectiveCookieName(),
		metrics:    newMetrics(),
		broker:     bt,

		bodyReadTimeout: bodyReadTimeout,
	}
	s.policy.Store(policy)
	s.signer.Store(signer)
	switch cfg.SessionStore {
	case StoreRedis:
		// go-redis has one process-wide logger for its own dial messages;
		// the store reports failures itself, so they go to debug.
		redisstore.SetLogger(deps.Log)
		client, err := redisstore.NewClient(cfg.RedisURL, string(cfg.RedisPassword))
		if err != nil {
			return nil, fmt.Errorf("%w: --redis-url: %w", ErrConfig, err)
		}
		st := redisstore.New(redisstore.Options{
			Client: client, CookieName: s.cookieName, Secure: cfg.CookieSecure, Codecs: codecs,
			MaxLifetime: cfg.SessionLifetime, Now: deps.Now,
			ClientCache: cfg.RedisClientCache, Log: deps.Log, Prefix: cfg.RedisKeyPrefix,
		})
		s.store = st
		s.runStore = st.Run
		s.closeStore = client.Close
		s.setCodecs = func(sc, lc []securecookie.Codec) { st.SetCodecs(sc); s.flow.SetCodecs(lc) }
	default:
		st := cookiestore.New(cookiestore.Options{Name: s.cookieName, Secure: cfg.CookieSecure, Codecs: codecs, Now: deps.Now})
		s.store = st
		s.runStore = func(context.Context) {}
		s.closeStore = func() error { return nil }
		s.setCodecs = func(sc, lc []securecookie.Codec) { st.SetCodecs(sc); s.flow.SetCodecs(lc) }
	}
	var broker *oidcflow.Broker
	if bt != nil {
		broker = &oidcflow.Broker{URL: strings.TrimSuffix(cfg.BrokerURL, "/"), Client: bt.client()}
	}
	// With Redis, used states and codes are refused on every replica.
	var shared oidcflow.UsedMarker
	if m, ok := s.store.(usedMarker); ok {
		shared = m
	}
	s.flow = oidcflow.New(oidcflow.Config{
		IssuerURL:       cfg.IssuerURL,
		ClientID:        cfg.ClientID,
		ClientSecret:    string(clientSecret),
		Scopes:          strings.Fields(cfg.Scopes),
		RedirectURLs:    redirects,
		GroupsClaim:     cfg.GroupsClaim,
		CookieName:      s.cookieName,
		Secure:          cfg.CookieSecure,
		Codecs:          loginCodecs,
		SessionLifetime: cfg.SessionLifetime,
		Shared:          shared,
		HTTPClient:      deps.HTTPClient,
		Broker:          broker,
		Now:             deps.Now,
		Log:             deps.Log,
	})
	s.refresher = newRefresher(s.flow, deps.Now)
	s.proxy = s.newReverseProxy()
	return s, nil
}

// reloadClientSecret re-reads --client-secret-file after it changed (a
// rotated provider secret in a mounted Secret), so the next code exchange,
// refresh or revocation uses the new secret. A bad file is logged and the
// current secret stays.
func (s *Server) reloadClientSecret(ctx context.Context) {
	secret, err := readClientSecret(s.cfg)
	if err != nil {
		s.log.ErrorContext(ctx, "Client secret file rejected; keeping the current secret", "file", s.cfg.ClientSecretFile, "error", err)
		return
	}
	s.flow.SetClientSecret(string(secret))
	s.log.InfoContext(ctx, "Client secret reloaded", "file", s.cfg.ClientSecretFile)
}

// reloadCookieSecrets re-reads --cookie-secret-file after it changed
// (mounted Secrets update in place): the first line seals new cookies and
// derives the identity signing key, the others are still accepted, and
// sessions under an older line are re-issued. A bad file is logged and the
// current secrets stay.
func (s *Server) reloadCookieSecrets(ctx context.Context) {
	secrets, err := readCookieSecrets(s.cfg.CookieSecretFile)
	var sc, lc []securecookie.Codec
	if err == nil {
		sc, err = cookiestore.Codecs(secrets, s.cfg.SessionLifetime)
	}
	if err == nil {
		lc, err = cookiestore.Codecs(secrets, oidcflow.LoginWindow)
	}
	var signer *identity.Signer
	if err == nil {
		// Assertions and page tokens follow the new first line; jwks.json
		// keeps the old key until what it signed has expired.
		signer, err = s.signer.Load().Rotated(secrets)
	}
	if err != nil {
		s.log.ErrorContext(ctx, "Cookie secret file rejected; keeping the current secrets", "file", s.cfg.CookieSecretFile, "error", err)
		return
	}
	s.setCodecs(sc, lc)
	s.signer.Store(signer)
	s.log.InfoContext(ctx, "Cookie secrets reloaded", "file", s.cfg.CookieSecretFile, "secrets", len(secrets))
}

// readCookieSecrets reads one secret a non-empty line (DESIGN.md behaviour
// 6); each line's raw bytes are key material.
func readCookieSecrets(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var secrets [][]byte
	for i, line := range bytes.Split(b, []byte("\n")) {
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if len(line) < cookiestore.MinSecretLen {
			return nil, fmt.Errorf("line %d is %d bytes, need at least %d (make one with: head -c 32 /dev/urandom | base64)", i+1, len(line), cookiestore.MinSecretLen)
		}
		secrets = append(secrets, line)
	}
	if len(secrets) == 0 {
		return nil, fmt.Errorf("%s holds no secret", path)
	}
	return secrets, nil
}

// readClientSecret reads the client secret file, or takes
// GATEHOUSE_CLIENT_SECRET; "none" declares a public client.
func readClientSecret(cfg Config) (Secret, error) {
	switch cfg.ClientSecretFile {
	case PublicClient:
		return nil, nil
	case "":
		return cfg.ClientSecret, nil
	}
	b, err := os.ReadFile(cfg.ClientSecretFile)
	if err != nil {
		return nil, err
	}
	secret := bytes.TrimSpace(b)
	if len(secret) == 0 {
		return nil, fmt.Errorf("%s is empty", cfg.ClientSecretFile)
	}
	return Secret(secret), nil
}

func (s *Server) newReverseProxy() *httputil.ReverseProxy {
	transport := &http.Transport{
		Proxy: nil, // the upstream is local; never route it through HTTP_PROXY
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		// One upstream: keep enough idle connections that concurrent
		// requests reuse them instead of dialling anew.
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Pass content encodings through untouched.
		DisableCompression: true,
	}
	upstream := s.upstream
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			pr.Out.Host = pr.In.Host // the app sees the Host the browser used
			forwarded(pr)
			// Identity goes on the outbound request here, after
			// ReverseProxy removed hop-by-hop headers, so a client's
			// "Connection: X-Auth-Request-User" cannot strip it.
			if out, ok := pr.In.Context().Value(outboundKey{}).(*outbound); ok {
				identity.SetHeaders(pr.Out.Header, out.identity, out.assertion)
				if out.accessToken != "" {
					pr.Out.Header.Set("Authorization", "Bearer "+out.accessToken)
				}
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			// A response that carries a Gatehouse Set-Cookie must never be
			// stored by a shared cache, whatever the app says.
			if out, ok := resp.Request.Context().Value(outboundKey{}).(*outbound); ok && out.setCookie {
				resp.Header.Set("Cache-Control", "private, no-store")
				resp.Header.Add("Vary", "Cookie")
			}
			return nil
		},
		Transport:  transport,
		BufferPool: newBufferPool(),
		ErrorLog:   slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.metrics.upstreamErrors.Inc()
			if errors.Is(err, errBodyTimeout) || bodyTimedOut(r) {
				s.writeError(w, r, fmt.Errorf("%w: %w", errBodyTimeout, err))
				return
			}
			if errors.Is(err, context.Canceled) {
				return // the client went away
			}
			s.writeError(w, r, fmt.Errorf("%w %s: %w", errUpstream, s.cfg.Upstream, err))
		},
	}
}

// Handler returns the handler for browsers' traffic.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// MetricsHandler returns the handler for --metrics-address.
func (s *Server) MetricsHandler() http.Handler { return s.metricsMux() }

// Run listens on --listen-address and --metrics-address and serves until
// ctx ends, then drains in-flight requests for up to --shutdown-timeout.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.ListenAddress)
	if err != nil {
		return fmt.Errorf("--listen-address: %w", err)
	}
	mln, err := lc.Listen(ctx, "tcp", s.cfg.MetricsAddress)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("--metrics-address: %w", err)
	}
	return s.Serve(ctx, ln, mln)
}

// Serve is Run on listeners the caller opened.
func (s *Server) Serve(ctx context.Context, ln, metricsLn net.Listener) error {
	bg, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	go func() {
		s.flow.Run(bg)
		if s.flow.Ready() {
			s.metrics.idpReady.Set(1)
		}
	}()
	if s.cfg.ConfigFile != "" {
		go s.watchFile(bg, s.cfg.ConfigFile, s.reloadPolicy)
	}
	go s.watchFile(bg, s.cfg.CookieSecretFile, s.reloadCookieSecrets)
	go s.runStore(bg)
	if f := s.cfg.ClientSecretFile; f != "" && f != PublicClient {
		go s.watchFile(bg, f, s.reloadClientSecret)
	}
	defer func() { _ = s.closeStore() }()
	if !s.cfg.CookieSecure {
		s.log.Warn("Cookies are not marked Secure (--cookie-secure=false); use this only for plain-HTTP local development")
	}
	if s.cfg.ClientSecretFile == PublicClient {
		s.log.Info("Running as a public OAuth client (PKCE only, no client secret)")
	}
	if s.broker != nil {
		s.log.Info("Token requests go through the broker, which holds the client secret", "broker", s.cfg.BrokerURL, "tokenFile", s.cfg.BrokerTokenFile, "caFile", s.cfg.BrokerCAFile)
		if _, err := readBrokerToken(s.cfg.BrokerTokenFile); err != nil {
			s.log.Warn("Broker token file unreadable; logins and refreshes fail until it can be read", "file", s.cfg.BrokerTokenFile, "error", err)
		}
		if s.cfg.BrokerCAFile != "" {
			go s.watchFile(bg, s.cfg.BrokerCAFile, s.reloadBrokerCA)
		}
	}
	main := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	admin := &http.Server{
		Handler:           s.metricsMux(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 2)
	go func() { errc <- main.Serve(ln) }()
	go func() { errc <- admin.Serve(metricsLn) }()
	s.ready.Store(true)
	s.log.Info("Proxy listening", "address", ln.Addr().String(), "metricsAddress", metricsLn.Addr().String(), "upstream", s.cfg.Upstream, "issuer", s.cfg.IssuerURL)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	s.ready.Store(false)
	s.log.Info("Shutting down: draining in-flight requests", "timeout", s.cfg.ShutdownTimeout.String())
	drain, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err := main.Shutdown(drain)
	_ = admin.Close()
	stopBackground()
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", serveErr)
	}
	if err != nil {
		return fmt.Errorf("drain in-flight requests: %w", err)
	}
	s.log.Info("Proxy stopped")
	return nil
}

// forwarded sets X-Forwarded-For, -Host and -Proto on the outbound request.
// The sidecar sits behind the cluster's ingress, which already set them for
// the browser's connection (TLS ends there), so values that arrive are kept
// and the ingress's address is appended to X-Forwarded-For; without them
// the proxy describes its own connection. They only describe the request;
// identity travels in the X-Auth-Request-* headers alone.
func forwarded(pr *httputil.ProxyRequest) {
	in := pr.In.Header
	if prior := in.Values("X-Forwarded-For"); len(prior) > 0 {
		pr.Out.Header["X-Forwarded-For"] = []string{strings.Join(prior, ", ")}
	}
	pr.SetXForwarded() // appends the client address, sets Host and Proto
	if v := in.Get("X-Forwarded-Host"); v != "" {
		pr.Out.Header.Set("X-Forwarded-Host", v)
	}
	if v := in.Get("X-Forwarded-Proto"); v == "https" || v == "http" {
		pr.Out.Header.Set("X-Forwarded-Proto", v)
	}
}

// bufferPool lends ReverseProxy its 32 KiB copy buffers, which it would
// otherwise allocate for every response.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(v []byte) { b.p.Put(&v) }

// outbound is what the proxy adds to a request it forwards.
type outbound struct {
	identity    identity.Identity
	assertion   string
	accessToken string
	setCookie   bool // the response carries a Gatehouse Set-Cookie
}

type outboundKey struct{}
