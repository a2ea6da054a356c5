package proxy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"

	"github.com/gatehouse-dev/gatehouse/proxy"
	"github.com/gatehouse-dev/gatehouse/proxy/idptest"
)

// testCA is a certificate authority for the test broker's certificate.
// Each has its own key, so one CA's bundle trusts none of another's
// certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// serverCert issues a serving certificate for 127.0.0.1.
func (ca *testCA) serverCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "gatehouse-broker"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// brokerPath is the test broker's path for the provider the sidecar uses.
const brokerPath = "/v1/providers/default"

// forwardedHeader marks the requests the test broker forwards to the IdP,
// so a test can tell them from requests the sidecar sent the IdP itself.
const forwardedHeader = "X-Test-Broker"

// brokerCall is one request the test broker received.
type brokerCall struct {
	Endpoint    string // "token" or "revoke"
	Bearer      string
	ContentType string
	Form        url.Values
}

// testBroker is gatehouse broker as a sidecar sees it: TLS on 127.0.0.1,
// POST <path>/token and <path>/revoke authenticated by a bearer token. It
// refuses requests that carry client credentials, and forwards the form
// to the fake IdP with the client authentication added
// (client_secret_basic, RFC 6749 2.3.1), passing the IdP's status,
// Content-Type and body back unchanged.
type testBroker struct {
	t    *testing.T
	idp  *idptest.Provider
	cert tls.Certificate
	// url is the base URL the sidecar is given.
	url string

	mu     sync.Mutex // guards the fields below
	srv    *httptest.Server
	addr   string
	token  string // the bearer token accepted
	answer *brokerAnswer
	calls  []brokerCall
}

// brokerAnswer is an OAuth error the broker gives instead of forwarding.
type brokerAnswer struct {
	status int
	code   string
}

func newTestBroker(t *testing.T, idp *idptest.Provider, cert tls.Certificate, token string) *testBroker {
	t.Helper()
	b := &testBroker{t: t, idp: idp, cert: cert, token: token}
	b.start("127.0.0.1:0")
	b.url = "https://" + b.addr + brokerPath
	t.Cleanup(b.stop)
	return b
}

// start serves on addr (a closed broker's address, to bring it back).
func (b *testBroker) start(addr string) {
	b.t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		b.t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(b.serve))
	_ = srv.Listener.Close()
	srv.Listener = ln
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{b.cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.srv, b.addr = srv, ln.Addr().String()
}

// stop closes the listener and every connection: the broker is down.
func (b *testBroker) stop() {
	b.mu.Lock()
	srv := b.srv
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// restart brings a stopped broker back on its address.
func (b *testBroker) restart() { b.start(b.addr) }

func (b *testBroker) setToken(token string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.token = token
}

// setAnswer makes the broker answer an OAuth error; nil forwards again.
func (b *testBroker) setAnswer(a *brokerAnswer) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.answer = a
}

// takeCalls returns the calls received since the last takeCalls.
func (b *testBroker) takeCalls() []brokerCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	calls := b.calls
	b.calls = nil
	return calls
}

func (b *testBroker) serve(w http.ResponseWriter, r *http.Request) {
	endpoint, ok := strings.CutPrefix(r.URL.Path, brokerPath+"/")
	if r.Method != http.MethodPost || (endpoint != "token" && endpoint != "revoke") {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil || !ok {
		brokerError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	auth := r.Header.Values("Authorization")
	bearer := ""
	if len(auth) == 1 {
		bearer, _ = strings.CutPrefix(auth[0], "Bearer ")
	}
	b.mu.Lock()
	b.calls = append(b.calls, brokerCall{Endpoint: endpoint, Bearer: bearer, ContentType: r.Header.Get("Content-Type"), Form: r.PostForm})
	token, answer := b.token, b.answer
	b.mu.Unlock()
	switch {
	case r.PostForm.Has("client_secret") || r.PostForm.Has("client_assertion"):
		b.t.Errorf("the sidecar sent the broker client credentials on %s", endpoint)
		brokerError(w, http.StatusBadRequest, "invalid_request")
	case bearer != token:
		// RFC 6750 3.1, as gatehouse broker answers.
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		brokerError(w, http.StatusUnauthorized, "invalid_token")
	case answer != nil:
		brokerError(w, answer.status, answer.code)
	default:
		b.forward(w, r, endpoint)
	}
}

func (b *testBroker) forward(w http.ResponseWriter, r *http.Request, endpoint string) {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, b.idp.URL+"/"+endpoint, strings.NewReader(r.PostForm.Encode()))
	if err != nil {
		b.t.Error(err)
		return
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(forwardedHeader, "1")
	req.SetBasicAuth(url.QueryEscape(b.idp.ClientID), url.QueryEscape(b.idp.ClientSecret))
	resp, err := b.idp.Client().Do(req)
	if err != nil {
		brokerError(w, http.StatusServiceUnavailable, "temporarily_unavailable")
		return
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

func brokerError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, `{"error":"`+code+`","error_description":"test broker"}`)
}

// idpRequest is what the fake IdP saw of one request.
type idpRequest struct {
	path          string
	authorization string
	forwarded     bool
	basicUser     string
	basicPass     string
}

// idpRequests records every request the fake IdP receives.
type idpRequests struct {
	mu   sync.Mutex
	reqs []idpRequest
}

func observeIdP(idp *idptest.Provider) *idpRequests {
	rec := &idpRequests{}
	idp.SetRequestHook(func(r *http.Request) {
		user, pass, _ := r.BasicAuth()
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.reqs = append(rec.reqs, idpRequest{
			path: r.URL.Path, authorization: r.Header.Get("Authorization"),
			forwarded: r.Header.Get(forwardedHeader) != "", basicUser: user, basicPass: pass,
		})
	})
	return rec
}

func (rec *idpRequests) all() []idpRequest {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.reqs)
}

// count returns how many requests went to path.
func (rec *idpRequests) count(path string) int {
	n := 0
	for _, r := range rec.all() {
		if r.path == path {
			n++
		}
	}
	return n
}

// checkOnlyBrokerAuthenticates fails the test unless every token and
// revocation request at the IdP came through the broker with the client
// authentication it added, and no request at all carried a ServiceAccount
// token.
func (rec *idpRequests) checkOnlyBrokerAuthenticates(t *testing.T, idp *idptest.Provider, saTokens ...string) {
	t.Helper()
	for _, r := range rec.all() {
		if r.path == "/token" || r.path == "/revoke" {
			if !r.forwarded {
				t.Errorf("the sidecar called the IdP's %s itself, not through the broker", r.path)
			}
			if r.basicUser != idp.ClientID || r.basicPass != idp.ClientSecret {
				t.Errorf("the IdP's %s got client %q without the broker's client_secret_basic", r.path, r.basicUser)
			}
		}
		for _, tok := range saTokens {
			if strings.Contains(r.authorization, tok) {
				t.Errorf("the IdP's %s got the ServiceAccount token", r.path)
			}
		}
	}
}

// writeFileAtomic replaces the file at path in one rename, as the kubelet
// swaps a mounted Secret, so a watcher never reads it half written.
func writeFileAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// brokerRig is a proxy in broker mode: no client secret, token requests
// to a test broker in front of a fake IdP, on an injected clock.
type brokerRig struct {
	idp       *idptest.Provider
	seen      *idpRequests
	broker    *testBroker
	brokerCA  *testCA // signed the broker's certificate
	otherCA   *testCA
	h         *harness
	clock     *testClock
	tokenFile string
	caFile    string
}

// firstToken is the ServiceAccount token the rig starts with.
const firstToken = "sa-token-1"

// newBrokerRig starts the rig. With trustBroker false, --broker-ca-file
// holds another CA than the one that signed the broker's certificate.
func newBrokerRig(t *testing.T, trustBroker bool, opts ...harnessOpt) *brokerRig {
	t.Helper()
	idp := idptest.New(t)
	idp.SetAccessTokenTTL(2 * time.Minute)
	r := &brokerRig{idp: idp, seen: observeIdP(idp), clock: &testClock{}, brokerCA: newTestCA(t, "broker CA"), otherCA: newTestCA(t, "other CA")}
	r.broker = newTestBroker(t, idp, r.brokerCA.serverCert(t), firstToken)
	dir := t.TempDir()
	r.tokenFile = filepath.Join(dir, "token")
	writeFileAtomic(t, r.tokenFile, firstToken+"\n")
	r.caFile = filepath.Join(dir, "broker-ca.crt")
	if trustBroker {
		writeFileAtomic(t, r.caFile, r.brokerCA.pem)
	} else {
		writeFileAtomic(t, r.caFile, r.otherCA.pem)
	}
	opts = append([]harnessOpt{withIdP(idp), withNow(r.clock.Now), withConfig(func(c *proxy.Config) {
		c.ClientSecretFile = ""
		c.BrokerURL = r.broker.url
		c.BrokerTokenFile = r.tokenFile
		c.BrokerCAFile = r.caFile
	})}, opts...)
	r.h = newHarness(t, opts...)
	r.h.waitDiscovered()
	return r
}

// expectOutagePage checks that a callback got the page of an IdP outage
// (DESIGN.md behaviour 11) and no session.
func expectOutagePage(t *testing.T, resp *http.Response) {
	t.Helper()
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("callback: status %d, Retry-After %q; want 503 with Retry-After; body %.300s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if !strings.Contains(body, "Sign-in is temporarily unavailable") || !strings.Contains(body, "/_gatehouse/start?rd=") {
		t.Errorf("callback: not the IdP outage page with a start-again link: %.400s", body)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "gatehouse" && c.MaxAge >= 0 && c.Value != "" {
			t.Errorf("a session cookie was set on a failed callback")
		}
	}
}

// formKeys returns the sorted names of a form's fields.
func formKeys(f url.Values) []string {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestBrokerLoginAndRefresh: with no client secret in the sidecar, the code
// exchange and the refresh go to the broker as a public client's requests
// with the ServiceAccount token as bearer, and reach the IdP with the
// client authentication the broker adds; userinfo still goes to the IdP.
func TestBrokerLoginAndRefresh(t *testing.T) {
	t.Parallel()
	r := newBrokerRig(t, true, withConfig(func(c *proxy.Config) { c.PassAccessToken = true }))
	h, idp := r.h, r.idp
	// Without groups in the ID token the login asks userinfo for them.
	idp.SetIDTokenHook(func(c map[string]any) { delete(c, "groups") })

	b := newBrowser(t)
	auth := location(t, b.get(h.url+"/reports"))
	challenge := auth.Query().Get("code_challenge")
	cb := location(t, b.get(auth.String(), idptest.UserHeader, "ann"))
	if back := rawLocation(t, b.get(cb.String())); back != "/reports" {
		t.Fatalf("after login the browser goes to %q, want /reports", back)
	}
	e := h.echo(b, "/reports")
	if e.Header.Get("X-Auth-Request-User") != "ann" || e.Header.Get("X-Auth-Request-Groups") != "developers" {
		t.Errorf("upstream identity %v, want ann with the groups from userinfo", e.Header)
	}

	calls := r.broker.takeCalls()
	if len(calls) != 1 || calls[0].Endpoint != "token" {
		t.Fatalf("broker calls %+v, want one token request", calls)
	}
	c := calls[0]
	if c.Bearer != firstToken {
		t.Errorf("broker got bearer %q, want the token file's %q", c.Bearer, firstToken)
	}
	if c.ContentType != "application/x-www-form-urlencoded" {
		t.Errorf("broker got Content-Type %q", c.ContentType)
	}
	if diff := cmp.Diff([]string{"client_id", "code", "code_verifier", "grant_type", "redirect_uri"}, formKeys(c.Form)); diff != "" {
		t.Errorf("code exchange form is not a public client's (-want +got):\n%s", diff)
	}
	f := c.Form
	if f.Get("grant_type") != "authorization_code" || f.Get("client_id") != idp.ClientID || f.Get("code") == "" {
		t.Errorf("code exchange form %v", f)
	}
	if got, want := f.Get("redirect_uri"), h.url+"/_gatehouse/callback"; got != want {
		t.Errorf("redirect_uri %q, want the exact --redirect-url %q", got, want)
	}
	// RFC 7636 4.5: the verifier of the challenge sent at the start.
	if challenge == "" || oauth2.S256ChallengeFromVerifier(f.Get("code_verifier")) != challenge {
		t.Errorf("code_verifier does not match the login's code_challenge %q", challenge)
	}
	if idp.TokenCalls("authorization_code") != 1 {
		t.Errorf("IdP answered %d code exchanges, want 1", idp.TokenCalls("authorization_code"))
	}
	if r.seen.count("/userinfo") == 0 {
		t.Error("userinfo was not asked for the missing groups")
	}
	for _, req := range r.seen.all() {
		if req.path == "/userinfo" && !strings.HasPrefix(req.authorization, "Bearer ey") {
			t.Errorf("userinfo got Authorization %.20q, want the user's access token", req.authorization)
		}
	}

	before := e.Header.Get("Authorization")
	r.clock.Advance(110 * time.Second) // 10s left of 120s: due
	after := h.echo(b, "/reports").Header.Get("Authorization")
	if after == before || after == "" {
		t.Error("the access token was not refreshed")
	}
	calls = r.broker.takeCalls()
	if len(calls) != 1 || calls[0].Endpoint != "token" {
		t.Fatalf("broker calls %+v, want one token request for the refresh", calls)
	}
	c = calls[0]
	if diff := cmp.Diff([]string{"client_id", "grant_type", "refresh_token"}, formKeys(c.Form)); diff != "" {
		t.Errorf("refresh form is not a public client's (-want +got):\n%s", diff)
	}
	if c.Bearer != firstToken || c.Form.Get("grant_type") != "refresh_token" || c.Form.Get("refresh_token") == "" || c.Form.Get("client_id") != idp.ClientID {
		t.Errorf("refresh request: bearer %q, form %v", c.Bearer, c.Form)
	}
	if idp.TokenCalls("refresh_token") != 1 {
		t.Errorf("IdP answered %d refreshes, want 1", idp.TokenCalls("refresh_token"))
	}
	r.seen.checkOnlyBrokerAuthenticates(t, idp, firstToken)
}

// TestBrokerTokenFileRotation: the token file is read for every broker
// request, so a rotated token is used at once; an empty or missing file
// fails that request as an outage would, naming the file in the logs.
func TestBrokerTokenFileRotation(t *testing.T) {
	t.Parallel()
	r := newBrokerRig(t, true)
	h := r.h
	b := newBrowser(t)
	h.login(b, "/", "ann")

	r.broker.setToken("sa-token-2")
	writeFileAtomic(t, r.tokenFile, "  sa-token-2\n\n")
	if back := h.login(newBrowser(t), "/after", "ann"); back != "/after" {
		t.Fatalf("login after the token rotation went to %q", back)
	}
	calls := r.broker.takeCalls()
	if len(calls) == 0 || calls[len(calls)-1].Bearer != "sa-token-2" {
		t.Fatalf("broker calls %+v, want the last with the rotated token", calls)
	}

	for name, breakFile := range map[string]func(){
		"empty":   func() { writeFileAtomic(t, r.tokenFile, " \n") },
		"missing": func() { _ = os.Remove(r.tokenFile) },
	} {
		breakFile()
		nb := newBrowser(t)
		cb := h.loginSteps(nb, "/", "ann")
		expectOutagePage(t, nb.get(cb.String()))
		// A due refresh fails the same way, and the session stays.
		r.clock.Advance(3 * time.Minute)
		h.echo(b, "/x")
		if calls := r.broker.takeCalls(); len(calls) != 0 {
			t.Errorf("%s token file: %d requests reached the broker", name, len(calls))
		}
	}
	logs := h.logs.String()
	if !strings.Contains(logs, r.tokenFile+" is empty") || !strings.Contains(logs, "read --broker-token-file: open "+r.tokenFile) {
		t.Errorf("the logs do not say which token file failed:\n%s", logs)
	}

	writeFileAtomic(t, r.tokenFile, "sa-token-2")
	r.clock.Advance(time.Minute) // past the refresh retry wait
	h.echo(b, "/x")
	if calls := r.broker.takeCalls(); len(calls) != 1 || calls[0].Form.Get("grant_type") != "refresh_token" || calls[0].Bearer != "sa-token-2" {
		t.Errorf("after the token file came back: broker calls %+v, want one refresh", calls)
	}
	r.seen.checkOnlyBrokerAuthenticates(t, r.idp, firstToken, "sa-token-2")
}

// TestBrokerCertificateMustChainToCAFile: a broker whose certificate does
// not chain to --broker-ca-file gets no request; a rotated CA file is
// picked up without a restart, and a bad one keeps the last good CAs.
func TestBrokerCertificateMustChainToCAFile(t *testing.T) {
	t.Parallel()
	r := newBrokerRig(t, false)
	h := r.h
	b := newBrowser(t)
	cb := h.loginSteps(b, "/", "ann")
	expectOutagePage(t, b.get(cb.String()))
	if resp := b.do(http.MethodGet, h.url+"/x", false); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("after the refused broker: status %d, want 401 (no session)", resp.StatusCode)
	}
	if calls := r.broker.takeCalls(); len(calls) != 0 {
		t.Errorf("an untrusted broker got %d requests", len(calls))
	}
	if !strings.Contains(h.logs.String(), "certificate signed by unknown authority") {
		t.Errorf("the logs do not say the broker's certificate was refused:\n%s", h.logs.String())
	}

	// The CA rotates: the new bundle trusts the broker's CA.
	writeFileAtomic(t, r.caFile, r.otherCA.pem+r.brokerCA.pem)
	eventually(t, 10*time.Second, func() string {
		if !strings.Contains(h.logs.String(), "Broker CA file reloaded") {
			return "the rotated CA file was not reloaded"
		}
		return ""
	})
	if back := h.login(newBrowser(t), "/trusted", "ann"); back != "/trusted" {
		t.Fatalf("login after the CA rotation went to %q", back)
	}

	writeFileAtomic(t, r.caFile, "not a certificate\n")
	eventually(t, 10*time.Second, func() string {
		if !strings.Contains(h.logs.String(), "Broker CA file rejected") {
			return "the bad CA file was not reported"
		}
		return ""
	})
	if back := h.login(newBrowser(t), "/still", "ann"); back != "/still" {
		t.Errorf("login after a bad CA file went to %q, want the last good CAs kept", back)
	}
}

// TestBrokerCAFileAtStart: a CA file that cannot be read stops New, as the
// other secret files do.
func TestBrokerCAFileAtStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := validProxyConfig()
	c.ClientSecretFile = ""
	c.CookieSecretFile = filepath.Join(dir, "cookie-secret")
	writeFileAtomic(t, c.CookieSecretFile, strings.Repeat("s", 40))
	c.BrokerURL = "https://127.0.0.1:8443" + brokerPath
	for name, content := range map[string]string{"missing": "", "not PEM": "not a certificate\n"} {
		c.BrokerCAFile = filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if content != "" {
			writeFileAtomic(t, c.BrokerCAFile, content)
		}
		_, err := proxy.New(c, proxy.Deps{})
		if !errors.Is(err, proxy.ErrConfig) || !strings.Contains(err.Error(), "--broker-ca-file") {
			t.Errorf("%s CA file: New() = %v, want a configuration error naming --broker-ca-file", name, err)
		}
	}
}

// TestBrokerDown: a broker that cannot be reached is an IdP outage
// (DESIGN.md behaviour 11): sessions keep working, a due refresh is
// retried later, a new login gets the outage page; when the broker is
// back, logins and refreshes work again.
func TestBrokerDown(t *testing.T) {
	t.Parallel()
	r := newBrokerRig(t, true)
	h := r.h
	b := newBrowser(t)
	h.login(b, "/", "ann")
	r.broker.takeCalls()
	r.broker.stop()

	if e := h.echo(b, "/still"); e.Header.Get("X-Auth-Request-User") != "ann" {
		t.Errorf("with the broker down the session lost its identity: %v", e.Header)
	}
	failures := func() int { return strings.Count(h.logs.String(), "Token refresh failed; keeping the session") }
	r.clock.Advance(110 * time.Second)
	for range 3 {
		h.echo(b, "/due")
	}
	if got := failures(); got != 1 {
		t.Errorf("%d refresh attempts for 3 requests, want 1 then a wait", got)
	}
	r.clock.Advance(31 * time.Second) // past the retry wait
	h.echo(b, "/due")
	if got := failures(); got != 2 {
		t.Errorf("%d refresh attempts after the retry wait, want 2", got)
	}

	nb := newBrowser(t)
	cb := h.loginSteps(nb, "/", "ann")
	expectOutagePage(t, nb.get(cb.String()))
	if resp := nb.do(http.MethodGet, h.url+"/x", false); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("after a failed login: status %d, want 401 (no session)", resp.StatusCode)
	}

	r.broker.restart()
	if back := h.login(newBrowser(t), "/back", "ann"); back != "/back" {
		t.Fatalf("login with the broker back went to %q", back)
	}
	r.broker.takeCalls()
	r.clock.Advance(31 * time.Second)
	h.echo(b, "/due")
	if calls := r.broker.takeCalls(); len(calls) != 1 || calls[0].Form.Get("grant_type") != "refresh_token" {
		t.Errorf("with the broker back: calls %+v, want the session's refresh", calls)
	}
	if got := failures(); got != 2 {
		t.Errorf("the refresh with the broker back failed")
	}
}

// TestBrokerRefusals: the broker's OAuth errors mean what the IdP's would
// (RFC 6749 5.2): a refusal of the namespace refuses the login and ends a
// session at its refresh; temporarily_unavailable is an outage. The
// broker refusing the sidecar's own ServiceAccount token (RFC 6750 3.1
// invalid_token: a wrong audience, an API server that cannot vouch for it
// now) says nothing about the user: the login gets the error page, and a
// session is kept and its refresh retried.
func TestBrokerRefusals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		answer      brokerAnswer
		loginStatus int
		sessionKept bool
	}{
		{"namespace or redirect_uri not allowed", brokerAnswer{http.StatusForbidden, "unauthorized_client"}, http.StatusForbidden, false},
		{"ServiceAccount token refused", brokerAnswer{http.StatusUnauthorized, "invalid_token"}, http.StatusBadGateway, true},
		{"IdP unreachable from the broker", brokerAnswer{http.StatusServiceUnavailable, "temporarily_unavailable"}, http.StatusServiceUnavailable, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newBrokerRig(t, true)
			h := r.h
			b := newBrowser(t)
			h.login(b, "/", "ann")
			r.broker.setAnswer(&tc.answer)

			nb := newBrowser(t)
			cb := h.loginSteps(nb, "/", "ann")
			if tc.loginStatus == http.StatusServiceUnavailable {
				expectOutagePage(t, nb.get(cb.String()))
			} else {
				expectRejectedCallback(t, nb.get(cb.String()), tc.loginStatus)
			}
			if resp := nb.do(http.MethodGet, h.url+"/x", false); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("after the refused login: status %d, want 401 (no session)", resp.StatusCode)
			}

			r.clock.Advance(110 * time.Second)
			resp := b.do(http.MethodGet, h.url+"/x", false)
			want := http.StatusUnauthorized
			if tc.sessionKept {
				want = http.StatusOK
			}
			if resp.StatusCode != want {
				t.Errorf("request with a due refresh: status %d, want %d", resp.StatusCode, want)
			}
			if calls := r.broker.takeCalls(); len(calls) != 3 || calls[2].Form.Get("grant_type") != "refresh_token" {
				t.Errorf("broker calls %+v, want login, login, refresh", calls)
			}
			if !tc.sessionKept {
				return
			}
			// The refresh is retried after the wait, and succeeds once the
			// broker answers again.
			r.broker.setAnswer(nil)
			r.clock.Advance(31 * time.Second)
			if resp := b.do(http.MethodGet, h.url+"/x", false); resp.StatusCode != http.StatusOK {
				t.Errorf("request after the retry wait: status %d, want 200", resp.StatusCode)
			}
			if calls := r.broker.takeCalls(); len(calls) != 1 || calls[0].Form.Get("grant_type") != "refresh_token" {
				t.Errorf("broker calls %+v after the retry wait, want the session's refresh", calls)
			}
			if got := r.idp.TokenCalls("refresh_token"); got != 1 {
				t.Errorf("IdP answered %d refreshes, want the retried one", got)
			}
		})
	}
}

// TestBrokerLogout: logout revokes the refresh token through the broker's
// /revoke (RFC 7009 2.1 form, bearer token, no client secret), never at
// the IdP directly.
func TestBrokerLogout(t *testing.T) {
	t.Parallel()
	r := newBrokerRig(t, true)
	h := r.h
	b := newBrowser(t)
	h.login(b, "/", "ann")
	cookie := sessionCookies(t, b, h.url)
	r.broker.takeCalls()

	post := raw(t, http.MethodPost, h.url+"/_gatehouse/logout", cookie, "Origin", h.url)
	if post.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: status %d", post.StatusCode)
	}
	calls := r.broker.takeCalls()
	if len(calls) != 1 || calls[0].Endpoint != "revoke" {
		t.Fatalf("broker calls %+v, want one revocation", calls)
	}
	c := calls[0]
	if diff := cmp.Diff([]string{"client_id", "token", "token_type_hint"}, formKeys(c.Form)); diff != "" {
		t.Errorf("revocation form (-want +got):\n%s", diff)
	}
	if c.Bearer != firstToken || c.ContentType != "application/x-www-form-urlencoded" || c.Form.Get("token_type_hint") != "refresh_token" || c.Form.Get("client_id") != r.idp.ClientID {
		t.Errorf("revocation: bearer %q, Content-Type %q, form %v", c.Bearer, c.ContentType, c.Form)
	}
	if rev := r.idp.Revoked(); len(rev) != 1 || rev[0] != c.Form.Get("token") || c.Form.Get("token") == "" {
		t.Errorf("IdP revoked %v, want the token sent through the broker", rev)
	}
	if n := r.seen.count("/revoke"); n != 1 {
		t.Errorf("IdP got %d revocation requests, want 1", n)
	}
	r.seen.checkOnlyBrokerAuthenticates(t, r.idp, firstToken)
}
