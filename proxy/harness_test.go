package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/proxy"
	"github.com/gatehouse-dev/gatehouse/proxy/idptest"
)

// echoed is what the echo upstream saw of one request.
type echoed struct {
	Method  string      `json:"method"`
	Path    string      `json:"path"`
	RawPath string      `json:"rawPath"`
	Query   string      `json:"query"`
	Host    string      `json:"host"`
	Header  http.Header `json:"header"`
}

// upstream is an httptest app that echoes what it receives as JSON and
// counts requests and new connections.
type upstream struct {
	*httptest.Server
	requests atomic.Int64
	conns    atomic.Int64
	mu       sync.Mutex
	last     *echoed
}

func newUpstream(t *testing.T, extra map[string]http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	mux := http.NewServeMux()
	for pattern, h := range extra {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			u.requests.Add(1)
			h(w, r)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		u.requests.Add(1)
		e := &echoed{Method: r.Method, Path: r.URL.Path, RawPath: r.URL.RawPath, Query: r.URL.RawQuery, Host: r.Host, Header: r.Header.Clone()}
		u.mu.Lock()
		u.last = e
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(e)
	})
	u.Server = httptest.NewUnstartedServer(mux)
	u.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			u.conns.Add(1)
		}
	}
	u.Start()
	t.Cleanup(u.Close)
	return u
}

// harness is a running proxy in front of an echo upstream and a fake IdP.
type harness struct {
	t        *testing.T
	idp      *idptest.Provider
	up       *upstream
	cfg      proxy.Config
	srv      *proxy.Server
	url      string // the proxy's base URL
	metrics  string // the metrics listener's base URL
	logs     *syncBuffer
	cancel   context.CancelFunc
	done     chan error
	dir      string
	secret   string
	upExtras map[string]http.HandlerFunc
	now      func() time.Time
	// beforeServe runs on the server between New and Serve.
	beforeServe []func(*proxy.Server)
}

type harnessOpt func(*harness)

func withConfig(f func(*proxy.Config)) harnessOpt {
	return func(h *harness) { f(&h.cfg) }
}

func withUpstreamHandler(pattern string, hf http.HandlerFunc) harnessOpt {
	return func(h *harness) { h.upExtras[pattern] = hf }
}

func withIdP(p *idptest.Provider) harnessOpt { return func(h *harness) { h.idp = p } }

func withSecret(s string) harnessOpt { return func(h *harness) { h.secret = s } }

func withNow(now func() time.Time) harnessOpt { return func(h *harness) { h.now = now } }

func withServer(f func(*proxy.Server)) harnessOpt {
	return func(h *harness) { h.beforeServe = append(h.beforeServe, f) }
}

// syncBuffer collects log output safely across goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newHarness(t *testing.T, opts ...harnessOpt) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), secret: strings.Repeat("s", 40), upExtras: map[string]http.HandlerFunc{}, logs: &syncBuffer{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.url = "http://" + ln.Addr().String()
	h.metrics = "http://" + mln.Addr().String()
	h.cfg = proxy.DefaultConfig()
	h.cfg.ListenAddress = ln.Addr().String()
	h.cfg.MetricsAddress = mln.Addr().String()
	h.cfg.ClientSecretFile = h.write("client-secret", "test-secret\n")
	h.cfg.RedirectURLs = []string{h.url + "/_gatehouse/callback"}
	h.cfg.CookieSecure = false
	h.cfg.ShutdownTimeout = 5 * time.Second
	for _, o := range opts {
		o(h)
	}
	if h.idp == nil {
		h.idp = idptest.New(t)
	}
	h.up = newUpstream(t, h.upExtras)
	h.cfg.Upstream = h.up.URL
	h.cfg.IssuerURL = h.idp.URL
	h.cfg.ClientID = h.idp.ClientID
	if h.cfg.CookieSecretFile == "" {
		h.cfg.CookieSecretFile = h.write("cookie-secret", h.secret+"\n")
	}
	// Options may have changed the redirect URLs or cookie settings.
	h.beforeServe = nil
	for _, o := range opts {
		o(h)
	}
	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := proxy.New(h.cfg, proxy.Deps{Log: log, Now: h.now})
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	h.srv = srv
	for _, f := range h.beforeServe {
		f(srv)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- srv.Serve(ctx, ln, mln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-h.done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("proxy logs:\n%s", h.logs.String())
		}
	})
	return h
}

// write puts a file in the harness directory and returns its path.
func (h *harness) write(name, content string) string {
	h.t.Helper()
	p := filepath.Join(h.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		h.t.Fatal(err)
	}
	return p
}

// waitDiscovered polls /readyz until the IdP has been discovered.
func (h *harness) waitDiscovered() {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(h.metrics + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(b), "identity provider: discovered") {
				return
			}
		}
		time.Sleep(10 * time.Millisecond) //nolint:forbidigo // polling readiness of a real server
	}
	h.t.Fatal("identity provider not discovered within 10s")
}

// browser is a cookie-keeping client that does not follow redirects, so
// tests see every step.
type browser struct {
	t      *testing.T
	client *http.Client
	jar    *cookiejar.Jar
}

func newBrowser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, jar: jar, client: &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}}
}

// do sends a request; navigation adds Accept: text/html. Extra headers are
// name/value pairs.
func (b *browser) do(method, rawURL string, navigation bool, headers ...string) *http.Response {
	b.t.Helper()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	if navigation {
		req.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	b.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (b *browser) get(rawURL string, headers ...string) *http.Response {
	return b.do(http.MethodGet, rawURL, true, headers...)
}

// location returns the Location of a redirect, failing unless status is
// 302.
func location(t *testing.T, resp *http.Response) *url.URL {
	t.Helper()
	if resp.StatusCode != http.StatusFound {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d, want 302; body: %.300s", resp.StatusCode, body)
	}
	u, err := resp.Location()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// rawLocation returns the Location header of a 302 exactly as sent.
func rawLocation(t *testing.T, resp *http.Response) string {
	t.Helper()
	location(t, resp)
	return resp.Header.Get("Location")
}

// loginSteps runs a login up to (not including) the callback: it opens
// path, follows the redirect to the IdP as user and returns the callback
// URL the IdP sent the browser to.
func (h *harness) loginSteps(b *browser, path, user string) *url.URL {
	b.t.Helper()
	auth := location(b.t, b.get(h.url+path))
	if !strings.HasPrefix(auth.String(), h.idp.URL+"/auth") {
		b.t.Fatalf("redirected to %s, want the IdP", auth)
	}
	cb := location(b.t, b.get(auth.String(), idptest.UserHeader, user))
	return cb
}

// login logs b in as user, starting at path, and returns where the proxy
// sent the browser after the callback.
func (h *harness) login(b *browser, path, user string) string {
	b.t.Helper()
	cb := h.loginSteps(b, path, user)
	return rawLocation(b.t, b.get(cb.String()))
}

// echo fetches path through the proxy as b and decodes the upstream's echo.
func (h *harness) echo(b *browser, path string, headers ...string) echoed {
	b.t.Helper()
	resp := b.do(http.MethodGet, h.url+path, false, headers...)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("GET %s: status %d: %.300s", path, resp.StatusCode, body)
	}
	var e echoed
	if err := json.Unmarshal(body, &e); err != nil {
		b.t.Fatalf("GET %s: not an upstream echo: %v: %.300s", path, err, body)
	}
	return e
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
