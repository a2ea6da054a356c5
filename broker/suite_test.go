package broker

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/onsi/gomega"
	"golang.org/x/oauth2"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/gatehouse-dev/gatehouse/controllers"
	"github.com/gatehouse-dev/gatehouse/internal/controlplane"
	"github.com/gatehouse-dev/gatehouse/proxy/idptest"
)

// Shared by the package's envtest tests: one control plane; each test
// runs its own broker in a namespace of its own, with tenant namespaces
// of its own.
var (
	// admin reaches the API server as an administrator.
	admin     client.Client
	clientset *kubernetes.Clientset
	// brokerREST is the broker's identity: a user named like the chart's
	// ServiceAccount, with only brokerRBAC's permissions.
	brokerREST *rest.Config
	// saKey signs ServiceAccount tokens, as the API server does, and
	// saIssuer is their iss.
	saKey    *ecdsa.PrivateKey
	saIssuer string
)

const (
	// brokerSA is the broker's ServiceAccount in the chart.
	brokerSANamespace = "gatehouse-system"
	brokerSAName      = "gatehouse-broker"
	// staticToken authenticates the user jane (not a ServiceAccount)
	// through the API server's --token-auth-file.
	staticToken = "static-token-of-a-person-not-a-serviceaccount"
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	// Fuzzing runs the pure decision alone, in many worker processes:
	// none of them needs a control plane of its own.
	flag.Parse()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		return m.Run()
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		var err error
		if assets, err = controlplane.Binaries("..", os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	dir, err := os.MkdirTemp("", "gatehouse-broker-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	tokenFile := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(staticToken+`,jane,jane-uid,"developers"`+"\n"), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	env.ControlPlane.GetAPIServer().Configure().Set("token-auth-file", tokenFile)
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "control plane: %v\n", err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	if err := setUp(env, cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func setUp(env *envtest.Environment, cfg *rest.Config) error {
	var err error
	if admin, err = client.New(cfg, client.Options{}); err != nil {
		return err
	}
	if clientset, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	apiserver := env.ControlPlane.GetAPIServer()
	b, err := os.ReadFile(filepath.Join(apiserver.CertDir, "sa-signer.key"))
	if err != nil {
		return err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return fmt.Errorf("sa-signer.key: no PEM")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return err
	}
	var ok bool
	if saKey, ok = key.(*ecdsa.PrivateKey); !ok {
		return fmt.Errorf("sa-signer.key: %T, want ECDSA", key)
	}
	saIssuer = apiserver.SecureServing.URL("https", "/").String()
	user, err := env.AddUser(envtest.User{
		Name:   "system:serviceaccount:" + brokerSANamespace + ":" + brokerSAName,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + brokerSANamespace},
	}, nil)
	if err != nil {
		return err
	}
	brokerREST = user.Config()
	ctx := context.Background()
	for _, obj := range clusterRBAC() {
		if err := admin.Create(ctx, obj); err != nil {
			return err
		}
	}
	return nil
}

// clusterRBAC and namespaceRBAC are all the broker may do, the same
// permissions the chart grants its ServiceAccount: review tokens, and list
// and watch, by name, the Secrets its providers name and the registry
// ConfigMap in its own namespace.
func clusterRBAC() []client.Object {
	subject := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: brokerSAName, Namespace: brokerSANamespace}}
	return []client.Object{
		&rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-broker"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}}},
		},
		&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-broker"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "gatehouse-broker"},
			Subjects:   subject,
		},
	}
}

// namespaceRBAC is the chart's Role for the providers file at path: the
// Secrets of clientSecretRef and clientKeyRef of the providers in broker
// mode, and the registry, each named in resourceNames; a list or watch
// with a metadata.name field selector is authorized as one of the named
// object.
func namespaceRBAC(t *testing.T, ns, path string) []client.Object {
	t.Helper()
	file, err := controllers.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var secrets []string
	for _, p := range file.Providers {
		if p.ClientSecretMode != controllers.ClientSecretModeBroker {
			continue
		}
		for _, ref := range []*controllers.SecretKeyRef{p.ClientSecretRef, p.ClientKeyRef} {
			if ref != nil && !slices.Contains(secrets, ref.Name) {
				secrets = append(secrets, ref.Name)
			}
		}
	}
	read := []string{"list", "watch"}
	rules := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{DefaultConfig().Registry}, Verbs: read}}
	if len(secrets) > 0 {
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: secrets, Verbs: read})
	}
	return []client.Object{
		&rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-broker", Namespace: ns},
			Rules:      rules,
		},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-broker", Namespace: ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "gatehouse-broker"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: brokerSAName, Namespace: brokerSANamespace}},
		},
	}
}

// newNamespace makes a namespace with a name of its own.
func newNamespace(t *testing.T, prefix string) string {
	t.Helper()
	if admin == nil {
		t.Skip("no control plane: the suite runs one only when not fuzzing")
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := admin.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, obj := range objs {
		if err := admin.Create(t.Context(), obj); err != nil {
			t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
		}
	}
}

// fakeClock is the broker's injected clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// syncBuffer is a log destination the broker writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
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

// exchangeLog records what went to the IdP and what came back, as the
// broker's HTTP client saw it.
type exchangeLog struct {
	mu    sync.Mutex
	calls []idpCall
}

type idpCall struct {
	path        string
	form        url.Values
	user, pass  string
	basic       bool
	status      int
	contentType string
	body        []byte
}

func (l *exchangeLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.calls)
}

func (l *exchangeLog) last(t *testing.T, path string) idpCall {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.calls) - 1; i >= 0; i-- {
		if l.calls[i].path == path {
			return l.calls[i]
		}
	}
	t.Fatalf("no call to the IdP's %s", path)
	return idpCall{}
}

// recorder is the broker's transport to the IdP: a real one, whose
// traffic it records, and which dials a closed port while down is set,
// so the IdP is really unreachable.
type recorder struct {
	next   http.RoundTripper
	log    *exchangeLog
	down   atomic.Bool
	closed string
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	r := &recorder{log: &exchangeLog{}, closed: closed}
	var d net.Dialer
	r.next = &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if r.down.Load() {
				addr = r.closed
			}
			return d.DialContext(ctx, network, addr)
		},
	}
	return r
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	c := idpCall{path: req.URL.Path}
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		c.form, _ = url.ParseQuery(string(b))
	}
	c.user, c.pass, c.basic = req.BasicAuth()
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	c.status, c.contentType, c.body = resp.StatusCode, resp.Header.Get("Content-Type"), b
	r.log.mu.Lock()
	r.log.calls = append(r.log.calls, c)
	r.log.mu.Unlock()
	return resp, nil
}

// world is one test's broker with its IdP and namespaces.
type world struct {
	t *testing.T
	// ns is the broker's namespace.
	ns     string
	idp    *idptest.Provider
	rec    *recorder
	clock  *fakeClock
	srv    *Server
	url    string
	client *http.Client
	log    *syncBuffer
	// certDir holds the broker's serving certificate.
	certDir string
	health  string
	metrics string
}

// brokerOptions shape a world's broker.
type brokerOptions struct {
	// providers is the providers file; ISSUER is replaced with the IdP's
	// URL.
	providers string
	// idpTimeout, when set, is the broker's HTTP client timeout.
	idpTimeout time.Duration
	// audience, when set, replaces the default token audience.
	audience string
	// registry, when set, is the registry ConfigMap's data before the
	// broker starts.
	registry map[string]string
	// clientKey, when set, is the PEM private key in Secret
	// clientKeyName, key clientKeyKey, before the broker starts.
	clientKey []byte
}

const clientSecretName = "idp-client"

// The Secret and key of the client's private key (clientKeyRef).
const (
	clientKeyName = "idp-client-key"
	clientKeyKey  = "tls.key"
)

// startBroker starts an IdP and a broker in a fresh namespace whose
// client secret Secret holds the IdP's secret.
func startBroker(t *testing.T, opts brokerOptions) *world {
	t.Helper()
	w := &world{t: t, idp: idptest.New(t), rec: newRecorder(t), clock: &fakeClock{t: time.Now()}, log: &syncBuffer{}}
	w.ns = newNamespace(t, "broker")
	dir := t.TempDir()
	file := filepath.Join(dir, "providers.yaml")
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(opts.providers, "ISSUER", w.idp.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	create(t, namespaceRBAC(t, w.ns, file)...)
	w.setClientSecret(w.idp.ClientSecret)
	if opts.registry != nil {
		w.setRegistry(opts.registry)
	}
	if opts.clientKey != nil {
		w.setClientKey(opts.clientKey)
	}
	w.certDir = filepath.Join(dir, "tls")
	pool := writeServingCert(t, w.certDir)
	cfg := DefaultConfig()
	cfg.ConfigFile, cfg.Namespace, cfg.TLSCertDir = file, w.ns, w.certDir
	if opts.audience != "" {
		cfg.TokenAudience = opts.audience
	}
	httpClient := &http.Client{Transport: w.rec, Timeout: idpTimeout}
	if opts.idpTimeout != 0 {
		httpClient.Timeout = opts.idpTimeout
	}
	srv, err := New(cfg, Deps{
		Log:        slog.New(slog.NewJSONHandler(w.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		RESTConfig: brokerREST,
		Now:        w.clock.Now,
		HTTPClient: httpClient,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.srv = srv
	var lns []net.Listener
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lns[0], lns[1], lns[2]) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	w.url = "https://" + lns[0].Addr().String()
	w.metrics = "http://" + lns[1].Addr().String()
	w.health = "http://" + lns[2].Addr().String()
	w.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	g := gomega.NewWithT(t)
	g.Eventually(func(g gomega.Gomega) {
		resp, err := http.Get(w.health + "/readyz")
		g.Expect(err).NotTo(gomega.HaveOccurred())
		resp.Body.Close()
		g.Expect(resp.StatusCode).To(gomega.Equal(http.StatusOK))
	}).WithTimeout(30 * time.Second).Should(gomega.Succeed())
	return w
}

// writeServingCert writes a self-signed certificate for 127.0.0.1 into
// dir as tls.crt and tls.key, and returns a pool that trusts it.
func writeServingCert(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "gatehouse-broker"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// The key first: the watcher reloads on the certificate's change.
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// setRegistry writes the registry ConfigMap of w's broker.
func (w *world) setRegistry(data map[string]string) {
	w.t.Helper()
	setRegistry(w.t, w.ns, data)
}

func setRegistry(t *testing.T, ns string, data map[string]string) {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: DefaultConfig().Registry, Namespace: ns}}
	if _, err := controllerutil.CreateOrUpdate(t.Context(), admin, cm, func() error {
		cm.Data = data
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// setClientSecret writes the client secret Secret of w's broker.
func (w *world) setClientSecret(secret string) {
	w.t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: clientSecretName, Namespace: w.ns}}
	if _, err := controllerutil.CreateOrUpdate(w.t.Context(), admin, s, func() error {
		s.Data = map[string][]byte{"client-secret": []byte(secret)}
		return nil
	}); err != nil {
		w.t.Fatal(err)
	}
}

// setClientKey writes the private key Secret of w's broker.
func (w *world) setClientKey(pemData []byte) {
	w.t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: clientKeyName, Namespace: w.ns}}
	if _, err := controllerutil.CreateOrUpdate(w.t.Context(), admin, s, func() error {
		s.Data = map[string][]byte{clientKeyKey: pemData}
		return nil
	}); err != nil {
		w.t.Fatal(err)
	}
}

// tenant is a namespace with a ServiceAccount and a Pod that uses it,
// like one whose sidecar calls the broker.
type tenant struct {
	ns  string
	sa  *corev1.ServiceAccount
	pod *corev1.Pod
}

func newTenant(t *testing.T, prefix string) *tenant {
	t.Helper()
	tn := &tenant{ns: newNamespace(t, prefix)}
	tn.sa = &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: tn.ns}}
	tn.pod = &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app-0", Namespace: tn.ns},
		Spec: corev1.PodSpec{
			ServiceAccountName: "app",
			Containers:         []corev1.Container{{Name: "app", Image: "app:test"}},
		},
	}
	create(t, tn.sa, tn.pod)
	return tn
}

// token mints the Pod's projected ServiceAccount token for audience with
// the TokenRequest API, as the kubelet does.
func (tn *tenant) token(t *testing.T, audience string) string {
	t.Helper()
	return tn.requestToken(t, audience, 600, true)
}

// requestToken mints a token of the ServiceAccount for audience that lives
// seconds, bound to the Pod or, as kubectl create token makes it, to
// nothing.
func (tn *tenant) requestToken(t *testing.T, audience string, seconds int64, podBound bool) string {
	t.Helper()
	spec := authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr.To(seconds)}
	if podBound {
		spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: tn.pod.Name, UID: tn.pod.UID}
	}
	tr, err := clientset.CoreV1().ServiceAccounts(tn.ns).CreateToken(t.Context(), tn.sa.Name, &authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// signedToken signs a ServiceAccount token for audience, bound to the Pod,
// that expires at exp with the API server's own service-account key, the
// way the API server does, so the API server judges it as one of its own.
func (tn *tenant) signedToken(t *testing.T, audience string, exp time.Time) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	kid := sha256.Sum256(der)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: saKey},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", base64.RawURLEncoding.EncodeToString(kid[:])))
	if err != nil {
		t.Fatal(err)
	}
	iat := exp.Add(-10 * time.Minute)
	if now := time.Now(); iat.After(now) {
		iat = now
	}
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{
		Issuer:    saIssuer,
		Subject:   "system:serviceaccount:" + tn.ns + ":" + tn.sa.Name,
		Audience:  jwt.Audience{audience},
		Expiry:    jwt.NewNumericDate(exp),
		IssuedAt:  jwt.NewNumericDate(iat),
		NotBefore: jwt.NewNumericDate(iat),
		ID:        rand.Text(),
	}).Claims(map[string]any{
		"kubernetes.io": map[string]any{
			"namespace":      tn.ns,
			"serviceaccount": map[string]any{"name": tn.sa.Name, "uid": string(tn.sa.UID)},
			"pod":            map[string]any{"name": tn.pod.Name, "uid": string(tn.pod.UID)},
		},
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// code runs the IdP's authorize step for redirectURI with a fresh PKCE
// verifier and returns the code and the verifier.
func (w *world) code(redirectURI string) (code, verifier string) {
	w.t.Helper()
	verifier = oauth2.GenerateVerifier()
	q := url.Values{
		"client_id": {w.idp.ClientID}, "response_type": {"code"}, "redirect_uri": {redirectURI},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}, "state": {"s"}, "nonce": {"n"},
		"scope": {"openid email"},
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(w.idp.URL + "/auth?" + q.Encode())
	if err != nil {
		w.t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		w.t.Fatalf("authorize: %s, Location %q", resp.Status, resp.Header.Get("Location"))
	}
	return loc.Query().Get("code"), verifier
}

// response is the broker's answer to one call.
type response struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

// post sends form to the broker's endpoint of provider with bearer (none
// when empty).
func (w *world) post(provider, endpoint, bearer string, form url.Values) response {
	w.t.Helper()
	return w.do(http.MethodPost, "/v1/providers/"+url.PathEscape(provider)+"/"+endpoint, bearer, "application/x-www-form-urlencoded", form.Encode())
}

func (w *world) do(method, path, bearer, contentType, body string) response {
	w.t.Helper()
	req, err := http.NewRequestWithContext(w.t.Context(), method, w.url+path, strings.NewReader(body))
	if err != nil {
		w.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		w.t.Fatal(err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, body: b}
	_ = json.Unmarshal(b, &r.json)
	return r
}
