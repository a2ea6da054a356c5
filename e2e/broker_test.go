package e2e_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/gatehouse-dev/gatehouse/controllers"
	"github.com/gatehouse-dev/gatehouse/e2e/idp"
	"github.com/gatehouse-dev/gatehouse/internal/demo"
)

// TestBrokerWithRealIdP runs the demo, whose provider is in broker mode, with
// oidc-provider's access tokens living 4 seconds. The sidecar has no client
// secret anywhere on its filesystem, yet signs users in and refreshes their
// tokens through gatehouse broker. The broker refuses a token of another
// namespace, a token of another audience, a token bound to no Pod and a
// callback on a host the namespace does not own. While the broker is down, signed-in users keep
// working, due refreshes are retried and new sign-ins get 503; once it is
// back, sign-ins work again.
func TestBrokerWithRealIdP(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	ctx := t.Context()
	d := startDemo(t, ctx, demo.Options{AccessTokenTTL: 4 * time.Second})

	// No client secret on the sidecar's filesystem: not among its
	// arguments, not in its Secret's files, not in its environment.
	if slices.ContainsFunc(d.LocalArgs, func(a string) bool { return strings.HasPrefix(a, "--client-secret-file") }) {
		t.Errorf("the sidecar has a client secret file: %q", d.LocalArgs)
	}
	mount := ""
	for _, a := range d.LocalArgs {
		if v, ok := strings.CutPrefix(a, "--cookie-secret-file="); ok {
			mount = filepath.Dir(v)
		}
	}
	files, err := os.ReadDir(mount)
	if err != nil || len(files) == 0 {
		t.Fatalf("the sidecar's Secret files in %q: %v", mount, err)
	}
	for _, f := range files {
		b, _ := os.ReadFile(filepath.Join(mount, f.Name()))
		if strings.Contains(string(b), d.IdP.ClientSecret) {
			t.Errorf("the sidecar's file %s holds the client secret", f.Name())
		}
	}

	// Sign in, then see the access token refreshed through the broker.
	user := signIn(t, d)
	if got := brokerCount(t, d, "exchange", "200"); got != 1 {
		t.Errorf("%v code exchanges through the broker, want 1", got)
	}
	waitFor(t, "a refresh through the broker", 30*time.Second, func() bool {
		if status := get(t, user, d.URL); status != http.StatusOK {
			t.Fatalf("a signed-in request got %d", status)
		}
		return brokerCount(t, d, "refresh", "200") >= 1
	})
	if n := countLines(d.IdP, "grant_type=refresh_token status=200"); n < 1 {
		t.Errorf("the IdP served %d refreshes", n)
	}

	// Refusals, straight at the broker with the CA the sidecar trusts.
	refusals(t, d)

	// Outage: the broker stops.
	if err := d.StopBroker(); err != nil {
		t.Fatal(err)
	}
	failedBefore := strings.Count(d.Logs("sidecar"), "Token refresh failed")
	waitFor(t, "two refreshes to fail while the broker is down", 60*time.Second, func() bool {
		if status := get(t, user, d.URL); status != http.StatusOK {
			t.Fatalf("a signed-in request got %d while the broker is down; sessions must keep working", status)
		}
		return strings.Count(d.Logs("sidecar"), "Token refresh failed") >= failedBefore+2
	})
	jar, _ := cookiejar.New(nil)
	newcomer := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	resp, err := idp.Login(newcomer, d.URL, idp.DemoUser, idp.DemoPassword)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a new sign-in while the broker is down ended with %d at %s, want 503", resp.StatusCode, resp.Request.URL)
	}

	// The broker is back: new sign-ins work, and refreshes again.
	if err := d.StartBroker(ctx); err != nil {
		t.Fatal(err)
	}
	signIn(t, d)
	waitFor(t, "a refresh once the broker is back", 30*time.Second, func() bool {
		if status := get(t, user, d.URL); status != http.StatusOK {
			t.Fatalf("a signed-in request got %d after the outage", status)
		}
		return brokerCount(t, d, "refresh", "200") >= 1
	})
}

// signIn signs the demo user in over HTTP and returns the signed-in client.
func signIn(t *testing.T, d *demo.Demo) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	resp, err := idp.Login(c, d.URL, idp.DemoUser, idp.DemoPassword)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "Hello, "+idp.DemoUser) {
		t.Fatalf("sign-in through the broker: %d at %s\n%s", resp.StatusCode, resp.Request.URL, body)
	}
	return c
}

func get(t *testing.T, c *http.Client, rawURL string) int {
	t.Helper()
	resp, err := c.Get(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// waitFor polls done every 200 ms until it holds or within passes.
func waitFor(t *testing.T, what string, within time.Duration, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, within)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// brokerCount reads gatehouse_broker_requests_total for the demo's
// namespace, an operation and a status code; 0 while the broker is down.
func brokerCount(t *testing.T, d *demo.Demo, operation, code string) float64 {
	t.Helper()
	resp, err := http.Get(d.BrokerMetricsURL)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var total float64
	re := regexp.MustCompile(`(?m)^gatehouse_broker_requests_total\{([^}]*)\} (\S+)$`)
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		labels := m[1]
		if strings.Contains(labels, `namespace="`+demo.AppNamespace+`"`) && strings.Contains(labels, `operation="`+operation+`"`) && strings.Contains(labels, `code="`+code+`"`) {
			v, _ := strconv.ParseFloat(m[2], 64)
			total += v
		}
	}
	return total
}

// refusals sends the broker code exchanges it must refuse, each with a
// projected-style token the API server issued.
func refusals(t *testing.T, d *demo.Demo) {
	t.Helper()
	ctx := t.Context()
	k8s := d.Client()
	var secret corev1.Secret
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: demo.AppNamespace, Name: mountedSecretName(d.Pod)}, &secret); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(secret.Data[controllers.SecretKeyBrokerCA]) {
		t.Fatal("no broker CA in the sidecar's Secret")
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	// token requests a token of pod's ServiceAccount for audience, bound
	// to pod as the kubelet binds a projected token; with pod nil, bound to
	// nothing, as kubectl create token makes it.
	token := func(ns string, pod *corev1.Pod, audience string) string {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: demo.AppServiceAccount, Namespace: ns}}
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](600)}}
		if pod != nil {
			tr.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
		}
		if err := k8s.SubResource("token").Create(ctx, sa, tr); err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	// A Pod of the other namespace: no kubelet runs it, it only has to
	// exist for a token to be bound to it.
	other := "tenant-b"
	otherPod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: other},
		Spec: corev1.PodSpec{
			ServiceAccountName: demo.AppServiceAccount,
			Containers:         []corev1.Container{{Name: "app", Image: "app:test"}},
		},
	}
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: demo.AppServiceAccount, Namespace: other}},
		otherPod,
	} {
		if err := k8s.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	exchanges := countLines(d.IdP, "grant_type=authorization_code")
	callback := strings.TrimSuffix(d.URL, "/") + "/_gatehouse/callback"
	verifier := strings.Repeat("v", 43)
	for _, tc := range []struct {
		name, bearer, redirect string
		status                 int
		errCode                string
	}{
		{"a token of another namespace", token(other, otherPod, controllers.DefaultBrokerAudience), callback, http.StatusForbidden, "unauthorized_client"},
		{"a token of another audience", token(demo.AppNamespace, d.Pod, "https://kubernetes.default.svc"), callback, http.StatusUnauthorized, "invalid_token"},
		{"a callback on another namespace's host", token(demo.AppNamespace, d.Pod, controllers.DefaultBrokerAudience), "https://billing.example.com/_gatehouse/callback", http.StatusForbidden, "unauthorized_client"},
		{"a token not bound to a Pod", token(demo.AppNamespace, nil, controllers.DefaultBrokerAudience), callback, http.StatusUnauthorized, "invalid_token"},
		{"no token", "", callback, http.StatusUnauthorized, "invalid_token"},
	} {
		form := url.Values{"grant_type": {"authorization_code"}, "code": {"a-code"}, "redirect_uri": {tc.redirect}, "code_verifier": {verifier}, "client_id": {"gatehouse-demo"}}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, d.BrokerURL+"/v1/providers/demo/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if tc.bearer != "" {
			req.Header.Set("Authorization", "Bearer "+tc.bearer)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var body struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || body.Error != tc.errCode {
			t.Errorf("%s: %d %q, want %d %q", tc.name, resp.StatusCode, body.Error, tc.status, tc.errCode)
		}
	}
	if got := countLines(d.IdP, "grant_type=authorization_code"); got != exchanges {
		t.Errorf("refused exchanges reached the IdP: %d token requests, %d before", got, exchanges)
	}
}

func mountedSecretName(p *corev1.Pod) string {
	for _, v := range p.Spec.Volumes {
		if v.Name == controllers.SecretVolumeName && v.Secret != nil {
			return v.Secret.SecretName
		}
	}
	return ""
}

// TestBrokerPrivateKeyJWTWithRealIdP: a provider with a private key
// (clientKeyRef) and no client secret at all. oidc-provider knows the
// client only by its public key (private_key_jwt), and the broker signs
// the client assertions for the sidecar's code exchange and refresh.
func TestBrokerPrivateKeyJWTWithRealIdP(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	d := startDemo(t, t.Context(), demo.Options{AccessTokenTTL: 4 * time.Second, PrivateKeyJWT: true})
	var secrets corev1.SecretList
	if err := d.Client().List(t.Context(), &secrets); err != nil {
		t.Fatal(err)
	}
	keys := 0
	for _, s := range secrets.Items {
		if _, ok := s.Data[controllers.SecretKeyClientSecret]; ok {
			t.Errorf("Secret %s/%s holds a client secret", s.Namespace, s.Name)
		}
		if _, ok := s.Data["private-key"]; ok {
			keys++
		}
	}
	if keys != 1 {
		t.Errorf("%d Secrets hold the provider's private key, want 1", keys)
	}
	user := signIn(t, d)
	waitFor(t, "a refresh through the broker", 30*time.Second, func() bool {
		if status := get(t, user, d.URL); status != http.StatusOK {
			t.Fatalf("a signed-in request got %d", status)
		}
		return brokerCount(t, d, "refresh", "200") >= 1
	})
	if n := countLines(d.IdP, "grant_type=authorization_code status=200"); n != 1 {
		t.Errorf("the IdP served %d code exchanges, want 1", n)
	}
	if n := countLines(d.IdP, "grant_type=refresh_token status=200"); n < 1 {
		t.Errorf("the IdP served %d refreshes", n)
	}
}
