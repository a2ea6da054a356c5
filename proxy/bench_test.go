package proxy_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/proxy"
	"github.com/gatehouse-dev/gatehouse/proxy/idptest"
)

// benchBody is the bench upstream's whole answer.
const benchBody = "hello from the upstream\n"

// benchProxy is a served proxy in front of a small upstream and the fake
// IdP, with one logged-in session. Benchmarks call its Handler directly;
// the listeners exist for discovery, the login and the upstream. It is
// newHarness for *testing.B, which newHarness does not take.
type benchProxy struct {
	handler http.Handler
	url     string // the proxy's base URL
	cookie  string // Cookie header carrying the session
}

func newBenchProxy(b *testing.B) *benchProxy {
	b.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, benchBody)
	}))
	b.Cleanup(up.Close)
	idp := idptest.New(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	p := &benchProxy{url: "http://" + ln.Addr().String()}
	dir := b.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			b.Fatal(err)
		}
		return path
	}
	cfg := proxy.DefaultConfig()
	cfg.ListenAddress = ln.Addr().String()
	cfg.MetricsAddress = mln.Addr().String()
	cfg.Upstream = up.URL
	cfg.IssuerURL = idp.URL
	cfg.ClientID = idp.ClientID
	cfg.ClientSecretFile = write("client-secret", idp.ClientSecret+"\n")
	cfg.CookieSecretFile = write("cookie-secret", strings.Repeat("s", 40)+"\n")
	cfg.RedirectURLs = []string{p.url + "/_gatehouse/callback"}
	cfg.CookieSecure = false
	cfg.ShutdownTimeout = 5 * time.Second
	srv, err := proxy.New(cfg, proxy.Deps{}) // nil Log: benchmarks measure without logging
	if err != nil {
		b.Fatalf("proxy.New: %v", err)
	}
	p.handler = srv.Handler()
	ctx, cancel := context.WithCancel(context.WithoutCancel(b.Context()))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, mln) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Serve: %v", err)
		}
	})
	benchWaitDiscovered(b, "http://"+mln.Addr().String())
	p.cookie = benchLogin(b, p.url, idp.URL, cfg.EffectiveCookieName())
	return p
}

// benchWaitDiscovered polls /readyz until the IdP has been discovered,
// which a login needs.
func benchWaitDiscovered(b *testing.B, metrics string) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(metrics + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body), "identity provider: discovered") {
				return
			}
		}
		time.Sleep(10 * time.Millisecond) //nolint:forbidigo // polling readiness of a real server
	}
	b.Fatal("identity provider not discovered within 10s")
}

// benchLogin logs in through the proxy as a browser would, following each
// 302 by hand, and returns the session's Cookie header.
func benchLogin(b *testing.B, base, idpURL, cookieName string) string {
	b.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	next := base + "/bench"
	for step := range 3 { // the page, the IdP's /auth, the callback
		req, err := http.NewRequest(http.MethodGet, next, nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Accept", "text/html")
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if resp.StatusCode != http.StatusFound || err != nil {
			b.Fatalf("login step %d: GET %s: status %d, want 302", step, next, resp.StatusCode)
		}
		if step == 0 && !strings.HasPrefix(loc.String(), idpURL+"/auth") {
			b.Fatalf("login redirected to %s, want the IdP", loc)
		}
		next = loc.String()
	}
	u, _ := url.Parse(base)
	var parts []string
	for _, ck := range jar.Cookies(u) {
		if ck.Name == cookieName || isChunk(ck.Name, cookieName) {
			parts = append(parts, ck.Name+"="+ck.Value)
		}
	}
	if len(parts) == 0 {
		b.Fatal("no session cookie after the login")
	}
	return strings.Join(parts, "; ")
}

func isChunk(name, cookieName string) bool {
	rest, ok := strings.CutPrefix(name, cookieName+"-")
	_, err := strconv.Atoi(rest)
	return ok && err == nil
}

// BenchmarkAuthenticatedRequest is the hot path: decode the session
// cookie, authorize, rewrite the headers and proxy to the upstream over a
// kept-alive loopback connection. The client side is in memory
// (httptest.NewRecorder); cloning the request is part of each iteration.
func BenchmarkAuthenticatedRequest(b *testing.B) {
	p := newBenchProxy(b)
	tmpl := httptest.NewRequest(http.MethodGet, p.url+"/bench", nil)
	tmpl.Header.Set("Cookie", p.cookie)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		p.handler.ServeHTTP(rec, tmpl.Clone(tmpl.Context())) // the handler edits the headers
		if rec.Code != http.StatusOK || rec.Body.String() != benchBody {
			b.Fatalf("status %d, want 200 from the upstream: %.200s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkPlainReverseProxy is the reference for
// BenchmarkAuthenticatedRequest: the same request through an
// httputil.ReverseProxy configured like the proxy's, without auth, so the
// difference is Gatehouse's own cost.
func BenchmarkPlainReverseProxy(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, benchBody)
	}))
	b.Cleanup(up.Close)
	target, _ := url.Parse(up.URL)
	transport := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	b.Cleanup(transport.CloseIdleConnections)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: transport,
	}
	tmpl := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:4180/bench", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, tmpl.Clone(tmpl.Context()))
		if rec.Code != http.StatusOK || rec.Body.String() != benchBody {
			b.Fatalf("status %d, want 200 from the upstream: %.200s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkUnauthenticatedNavigation is a page load without a session:
// seal a new login-state cookie and redirect to the IdP.
func BenchmarkUnauthenticatedNavigation(b *testing.B) {
	p := newBenchProxy(b)
	tmpl := httptest.NewRequest(http.MethodGet, p.url+"/bench", nil)
	tmpl.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		p.handler.ServeHTTP(rec, tmpl.Clone(tmpl.Context()))
		if rec.Code != http.StatusFound {
			b.Fatalf("status %d, want 302 to the IdP", rec.Code)
		}
	}
}
