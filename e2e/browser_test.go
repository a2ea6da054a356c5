package e2e_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/gatehouse-dev/gatehouse/e2e/idp"
	"github.com/gatehouse-dev/gatehouse/internal/demo"
)

// TestBrowserDemo drives headless Chromium through `make demo`: open the
// app, sign in at the IdP, land on the original URL with the identity the
// app received, sign out and be asked to sign in again; a user outside the
// allowed group sees the 403 page. It checks what only a browser enforces:
// the session cookie is HttpOnly (invisible to scripts), SameSite=Lax and
// host-only, and the redirects arrive where they should. A screenshot of
// every step goes to the test's artifact directory (go test -artifacts).
func TestBrowserDemo(t *testing.T) {
	chromium := findChromium(t)
	if testing.Short() {
		t.Skip("starts a control plane and a browser")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	d := startDemo(t, ctx, demo.Options{})

	b := newBrowser(t, ctx, chromium)
	do, get, screenshot := b.do, b.get, b.screenshot
	cookies := func() []*network.Cookie { return b.cookies(d.URL) }
	app, _ := url.Parse(d.URL)
	issuer, _ := url.Parse(d.IdP.Issuer)
	deepLink := d.URL + "reports/q3?sort=desc"

	// 1. The app sends the browser to the IdP's sign-in page.
	do("open the app", chromedp.Navigate(deepLink), chromedp.WaitVisible(chromedp.CSS(`input[name="login"]`)), screenshot("idp-sign-in"))
	if loc := get("location", chromedp.Location()); hostOf(loc) != issuer.Host {
		t.Fatalf("opening the app landed on %s, want the IdP at %s", loc, issuer.Host)
	}

	// 2. Sign in: back on the original URL, with the identity the app saw.
	signIn := func(user, password string) {
		t.Helper()
		do("sign in as "+user,
			chromedp.SendKeys(chromedp.CSS(`input[name="login"]`), user),
			chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), password),
			chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
			// The IdP's page has an h1 too: first leave it.
			b.waitLocation("the app", func(loc string) bool { return hostOf(loc) == app.Host }),
			chromedp.WaitVisible(chromedp.CSS(`h1`)),
		)
	}
	signIn(idp.DemoUser, idp.DemoPassword)
	do("screenshot", screenshot("signed-in"))
	if loc := get("location", chromedp.Location()); loc != deepLink {
		t.Errorf("after sign-in the browser is at %s, want the original %s", loc, deepLink)
	}
	if heading := get("heading", chromedp.Text(chromedp.CSS("h1"))); heading != "Hello, "+idp.DemoUser {
		t.Errorf("heading %q, want the app's greeting of %s", heading, idp.DemoUser)
	}
	body := get("page text", chromedp.Text(chromedp.CSS("body")))
	for _, want := range []string{idp.DemoEmail, demo.AllowedGroup, "verified: iss " + strings.TrimSuffix(d.URL, "/"), "/reports/q3?sort=desc"} {
		if !strings.Contains(body, want) {
			t.Errorf("the app page does not show %q:\n%s", want, body)
		}
	}

	// The session cookie as the browser keeps it.
	all := cookies()
	sess := findCookie(all, "gatehouse")
	switch {
	case sess == nil:
		t.Fatalf("no session cookie gatehouse among %v", cookieNames(all))
	case !sess.HTTPOnly:
		t.Error("the session cookie is not HttpOnly")
	case sess.SameSite != network.CookieSameSiteLax:
		t.Errorf("the session cookie has SameSite=%q, want Lax", sess.SameSite)
	case sess.Domain != app.Hostname() || sess.Path != "/":
		t.Errorf("the session cookie has domain %q path %q, want host-only %q and /", sess.Domain, sess.Path, app.Hostname())
	}
	if script := get("document.cookie", chromedp.Evaluate[string](`document.cookie`)); strings.Contains(script, "gatehouse") {
		t.Errorf("scripts can read Gatehouse cookies: %q", script)
	}

	// 3. Sign out (the app's button, then the IdP's confirmation: the demo's
	// provider has logoutRedirect: idp); the IdP returns the browser to the
	// app, which asks for a sign-in again.
	do("sign out",
		chromedp.Click(chromedp.CSS(`form[action$="/logout"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`button[name="logout"]`)),
		screenshot("idp-sign-out"),
		chromedp.Click(chromedp.CSS(`button[name="logout"]`)),
		chromedp.WaitVisible(chromedp.CSS(`input[name="login"]`)),
		screenshot("signed-out"),
	)
	if loc := get("location", chromedp.Location()); hostOf(loc) != issuer.Host {
		t.Errorf("after sign-out the app is at %s, want the IdP's sign-in page", loc)
	}
	if findCookie(cookies(), "gatehouse") != nil {
		t.Errorf("the session cookie survived sign-out")
	}

	// 4. A user outside the allowed group signs in and gets the 403 page.
	signIn(idp.AliceUser, idp.AlicePassword)
	do("screenshot", screenshot("forbidden"))
	loc := get("location", chromedp.Location())
	if heading := get("heading", chromedp.Text(chromedp.CSS("h1"))); hostOf(loc) != app.Host || heading != "Access denied" {
		t.Errorf("%s saw %q at %s, want Gatehouse's Access denied page on the app", idp.AliceUser, heading, loc)
	}
}

// browser is a headless Chromium for one test, with helpers that fail the
// test with the page's address and text.
type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string
	step  int
}

func newBrowser(t *testing.T, ctx context.Context, chromium string, flags ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 800),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, append(opts, flags...)...)
	t.Cleanup(cancelAlloc)
	bctx, cancel := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel)
	return &browser{t: t, ctx: bctx, shots: t.ArtifactDir()}
}

// screenshot saves the page as <n>-<name>.png in the artifact directory.
func (b *browser) screenshot(name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		png, err := chromedp.CaptureScreenshot()(ctx, tgt)
		if err != nil {
			return err
		}
		b.step++
		return os.WriteFile(filepath.Join(b.shots, fmt.Sprintf("%02d-%s.png", b.step, name)), png, 0o644)
	})
}

// waitLocation waits until the page's address satisfies ok (what names it
// for the error).
func (b *browser) waitLocation(what string, ok func(string) bool) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		for {
			loc, err := chromedp.Location()(ctx, tgt)
			if err != nil {
				return err
			}
			if ok(loc) {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for %s, still at %s: %w", what, loc, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
}

func (b *browser) fail(what string, err error) {
	b.t.Helper()
	loc, _ := chromedp.Run(b.ctx, chromedp.Location())
	text, _ := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS("body")))
	b.t.Fatalf("%s: %v\nat %s:\n%s", what, err, loc, text)
}

func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.fail(what, err)
	}
}

func (b *browser) get(what string, a chromedp.Action[string]) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, a)
	if err != nil {
		b.fail(what, err)
	}
	return v
}

// cookies are the browser's cookies for rawURL.
func (b *browser) cookies(rawURL string) []*network.Cookie {
	b.t.Helper()
	res, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{rawURL}})
	if err != nil {
		b.fail("read cookies", err)
	}
	return res.Cookies
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

// findChromium returns Debian's chromium (installed by .ci/run) or the
// browser in $GATEHOUSE_CHROMIUM. Without one the test fails in CI and is
// skipped elsewhere.
func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("GATEHOUSE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no Chromium: install Debian's chromium (.ci/run does) or set GATEHOUSE_CHROMIUM")
	}
	t.Skip("no Chromium: install Debian's chromium or set GATEHOUSE_CHROMIUM to run the browser test")
	return ""
}

func findCookie(cs []*network.Cookie, name string) *network.Cookie {
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func cookieNames(cs []*network.Cookie) []string {
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return names
}

// startDemo starts make demo's set-up on free ports (gatewayAPI: behind an
// HTTPRoute), stopped when the test ends; on failure it logs its
// processes' output.
func startDemo(t *testing.T, ctx context.Context, opts demo.Options) *demo.Demo {
	t.Helper()
	ports := make([]int, 4)
	for i := range ports {
		_, p, _ := net.SplitHostPort(freeAddr(t))
		ports[i], _ = strconv.Atoi(p)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	opts.Root, opts.Bin, opts.Out = root, filepath.Dir(binary), &progress
	opts.ProxyPort, opts.AppPort, opts.IdPPort, opts.MetricsPort = ports[0], ports[1], ports[2], ports[3]
	d, err := demo.Start(ctx, opts)
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, progress.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("progress:\n%s", progress.String())
			for _, name := range []string{"controller", "broker", "sidecar", "sampleapp"} {
				t.Logf("%s log:\n%s", name, d.Logs(name))
			}
		}
		if err := d.Stop(); err != nil {
			t.Errorf("stop the demo: %v", err)
		}
	})
	return d
}

// TestBrowserSecureCookies runs the sidecar with its defaults (Secure
// cookies, the __Host- prefix) behind a TLS-terminating front, as behind an
// ingress controller, and signs in with Chromium. A browser drops a
// __Host- cookie that lacks Secure or Path=/ or has a Domain, and sends
// SameSite=Strict cookies on no cross-site redirect, so a mistake in any of
// them breaks this sign-in.
func TestBrowserSecureCookies(t *testing.T) {
	chromium := findChromium(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	sidecarAddr, metrics := freeAddr(t), freeAddr(t)
	sidecar, _ := url.Parse("http://" + sidecarAddr)
	front := httptest.NewUnstartedServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(sidecar)
		r.Out.Host = r.In.Host
		r.Out.Header.Set("X-Forwarded-Proto", "https")
		r.Out.Header.Set("X-Forwarded-Host", r.In.Host)
	}})
	front.StartTLS()
	t.Cleanup(front.Close)
	base := front.URL // https://127.0.0.1:<port>
	spki := sha256.Sum256(front.Certificate().RawSubjectPublicKeyInfo)

	provider := idp.Start(t, idp.Options{RedirectURIs: []string{base + "/_gatehouse/callback"}})
	upstream := echoUpstream(t)
	startGatehouse(t, "proxy",
		"--listen-address="+sidecarAddr,
		"--metrics-address="+metrics,
		"--upstream="+upstream.URL,
		"--issuer-url="+provider.Issuer,
		"--client-id="+provider.ClientID,
		"--client-secret-file="+writeFile(t, "client-secret", provider.ClientSecret),
		"--redirect-url="+base+"/_gatehouse/callback",
		"--cookie-secret-file="+writeFile(t, "cookie-secret", strings.Repeat("e2e-cookie-secret-", 3)),
	)
	waitReady(t, metrics)

	// The front's certificate is trusted by its key, as a company CA would
	// be; Chromium applies every other cookie and TLS rule.
	b := newBrowser(t, ctx, chromium,
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])))
	b.do("open the app over https",
		chromedp.Navigate(base+"/private/page"),
		chromedp.WaitVisible(chromedp.CSS(`input[name="login"]`)),
		b.screenshot("idp-sign-in"),
		chromedp.SendKeys(chromedp.CSS(`input[name="login"]`), idp.DemoUser),
		chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), idp.DemoPassword),
		chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
		b.waitLocation(base+"/private/page", func(loc string) bool { return loc == base+"/private/page" }),
		chromedp.WaitVisible(chromedp.CSS(`body`)),
		b.screenshot("signed-in"),
	)
	if loc := b.get("location", chromedp.Location()); loc != base+"/private/page" {
		t.Fatalf("after sign-in the browser is at %s, want %s/private/page", loc, base)
	}
	echo := b.get("page", chromedp.Text(chromedp.CSS("body")))
	if !strings.Contains(echo, idp.DemoEmail) || !strings.Contains(echo, `"/private/page"`) {
		t.Errorf("the upstream did not receive the signed-in request for %s:\n%s", idp.DemoEmail, echo)
	}
	all := b.cookies(base + "/")
	sess := findCookie(all, "__Host-gatehouse")
	switch {
	case sess == nil:
		t.Fatalf("the browser kept no __Host-gatehouse cookie; it has %v", cookieNames(all))
	case !sess.Secure || !sess.HTTPOnly || sess.SameSite != network.CookieSameSiteLax || sess.Path != "/":
		t.Errorf("session cookie Secure=%v HttpOnly=%v SameSite=%q Path=%q, want Secure, HttpOnly, Lax, /",
			sess.Secure, sess.HTTPOnly, sess.SameSite, sess.Path)
	}
	// Only the session cookie is left: the login cookies were cleared.
	// (Cookies ignore ports, so the IdP's own on 127.0.0.1 show up too.)
	var ours []string
	for _, name := range cookieNames(all) {
		if !strings.HasPrefix(name, "gatehouse_idp_") {
			ours = append(ours, name)
		}
	}
	if len(ours) != 1 {
		t.Errorf("Gatehouse cookies after sign-in %v, want only __Host-gatehouse", ours)
	}
}
