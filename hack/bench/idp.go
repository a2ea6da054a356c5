package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/coreos/go-oidc/v3/oidc/oidctest"
	"golang.org/x/oauth2"

	"github.com/gatehouse-dev/gatehouse/proxy/idptest"
)

// idp is the fake IdP with a record of the ID tokens it signs.
type idp struct {
	*idptest.Provider
	cleanups []func()

	mu          sync.Mutex // guards lastIDToken
	lastIDToken string
}

// errIdPFatal carries idptest's t.Fatal out of idptest.New.
type errIdPFatal struct{ msg string }

// idpTB is the idptest.TB of a program: Fatal aborts idptest.New with a
// panic that startIdP turns back into an error, and Cleanup collects what
// close runs.
type idpTB struct{ p *idp }

var _ idptest.TB = idpTB{}

func (idpTB) Helper()            {}
func (idpTB) Fatal(args ...any)  { panic(errIdPFatal{fmt.Sprint(args...)}) }
func (t idpTB) Cleanup(f func()) { t.p.cleanups = append(t.p.cleanups, f) }

func (p *idp) recordIDToken(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastIDToken = s
}

// idToken is the ID token signed last.
func (p *idp) idToken() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastIDToken
}

// startIdP starts the fake IdP on 127.0.0.1. Its ID tokens are signed as
// usual, and the last one is kept so that the report can compare the
// session cookie with the tokens it holds.
func startIdP() (p *idp, err error) {
	p = &idp{}
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(errIdPFatal)
			if !ok {
				panic(r)
			}
			p.close()
			err = fmt.Errorf("start fake IdP: %s", f.msg)
		}
	}()
	p.Provider = idptest.New(idpTB{p})
	p.SetSignHook(func(claims []byte) string {
		tok := oidctest.SignIDToken(p.Key, p.KeyID, oidc.RS256, string(claims))
		p.recordIDToken(tok)
		return tok
	})
	return p, nil
}

// close stops the IdP's server.
func (p *idp) close() {
	for _, f := range slices.Backward(p.cleanups) {
		f()
	}
	p.cleanups = nil
}

// tokenSizes are the lengths of the tokens a session holds.
type tokenSizes struct{ id, access, refresh int }

func (t tokenSizes) total() int { return t.id + t.access + t.refresh }

// sampleTokens runs a code flow against the IdP directly and returns the
// lengths of the access and refresh tokens it issues. The fake IdP's access
// and refresh tokens are random strings of fixed length, so these equal the
// lengths of the ones the proxy holds; the proxy's ID token itself is
// recorded when it is signed.
func (p *idp) sampleTokens(ctx context.Context) (access, refresh int, err error) {
	cfg := oauth2.Config{
		ClientID: p.ClientID, ClientSecret: p.ClientSecret,
		Endpoint:    oauth2.Endpoint{AuthURL: p.URL + "/auth", TokenURL: p.URL + "/token"},
		RedirectURL: "http://127.0.0.1/sample-callback",
		Scopes:      []string{oidc.ScopeOpenID, "email", "profile"},
	}
	verifier := oauth2.GenerateVerifier()
	auth := cfg.AuthCodeURL("sample-state", oidc.Nonce("sample-nonce"), oauth2.S256ChallengeOption(verifier))
	cb, err := redirectOf(ctx, noRedirects(nil), auth, false)
	if err != nil {
		return 0, 0, fmt.Errorf("sample login: %w", err)
	}
	tok, err := cfg.Exchange(ctx, cb.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		return 0, 0, fmt.Errorf("sample token exchange: %w", err)
	}
	return len(tok.AccessToken), len(tok.RefreshToken), nil
}

// noRedirects is a client that returns every response as is, so each step
// of a login can be checked.
func noRedirects(jar http.CookieJar) *http.Client {
	return &http.Client{
		Jar:           jar,
		Transport:     &http.Transport{Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
}

// redirectOf GETs rawURL (as a browser navigation when navigation is set)
// and returns the Location of the 302 it must answer.
func redirectOf(ctx context.Context, c *http.Client, rawURL string, navigation bool) (*url.URL, error) {
	resp, err := get(ctx, c, rawURL, navigation, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return nil, fmt.Errorf("GET %s: status %d, want 302: %s", stripQuery(rawURL), resp.StatusCode, body)
	}
	return resp.Location()
}

// get sends a GET; navigation adds Accept: text/html, cookie a Cookie
// header.
func get(ctx context.Context, c *http.Client, rawURL string, navigation bool, cookie string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	if navigation {
		req.Header.Set("Accept", navigationAccept)
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", stripQuery(rawURL), err)
	}
	return resp, nil
}

// navigationAccept is a browser's Accept on a page load.
const navigationAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

// stripQuery keeps codes and state out of error messages.
func stripQuery(rawURL string) string {
	before, _, _ := strings.Cut(rawURL, "?")
	return before
}

// sessionCookie is a session as the browser holds it.
type sessionCookie struct {
	header     string // the Cookie header value: name=value; name-1=value...
	valueBytes int    // the sum of the chunks' value lengths
	chunks     int
}

// login logs in through the proxy at base as a browser would: the page
// without a session redirects to the IdP, which logs the default user in at
// once and sends the browser to the proxy's callback, which sets the
// session cookie. cookieName is the proxy's --cookie-name.
func login(ctx context.Context, base, idpURL, path, cookieName string) (sessionCookie, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return sessionCookie{}, err
	}
	c := noRedirects(jar)
	auth, err := redirectOf(ctx, c, base+path, true)
	if err != nil {
		return sessionCookie{}, err
	}
	if !strings.HasPrefix(auth.String(), idpURL+"/auth") {
		return sessionCookie{}, fmt.Errorf("GET %s redirected to %s, want the IdP's /auth", path, stripQuery(auth.String()))
	}
	cb, err := redirectOf(ctx, c, auth.String(), true)
	if err != nil {
		return sessionCookie{}, err
	}
	resp, err := get(ctx, c, cb.String(), true, "")
	if err != nil {
		return sessionCookie{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return sessionCookie{}, fmt.Errorf("callback: status %d, want 302: %s", resp.StatusCode, body)
	}
	return sessionFrom(resp.Cookies(), cookieName)
}

// sessionFrom picks the session cookie chunks (name, name-1, name-2, ...)
// out of a response's Set-Cookie, ignoring login-state cookies.
func sessionFrom(set []*http.Cookie, name string) (sessionCookie, error) {
	chunks := map[int]string{}
	for _, c := range set {
		if c.MaxAge < 0 || c.Value == "" {
			continue
		}
		if c.Name == name {
			chunks[0] = c.Value
			continue
		}
		rest, ok := strings.CutPrefix(c.Name, name+"-")
		if i, err := strconv.Atoi(rest); ok && err == nil && i > 0 {
			chunks[i] = c.Value
		}
	}
	if _, ok := chunks[0]; !ok {
		return sessionCookie{}, errors.New("callback set no session cookie " + name)
	}
	var s sessionCookie
	var parts []string
	for i := 0; ; i++ {
		v, ok := chunks[i]
		if !ok {
			break
		}
		parts = append(parts, chunkName(name, i)+"="+v)
		s.valueBytes += len(v)
		s.chunks++
	}
	s.header = strings.Join(parts, "; ")
	return s, nil
}

func chunkName(name string, i int) string {
	if i == 0 {
		return name
	}
	return name + "-" + strconv.Itoa(i)
}
