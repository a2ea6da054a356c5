//go:build !sidecar

package main

import (
	"bytes"
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// fakeWebhook answers AdmissionReviews with answer(request), as a TLS
// server on loopback; it fails the test when the request is not the
// harmless review webhook-check promises.
func fakeWebhook(t *testing.T, answer func(*admissionv1.AdmissionRequest) *admissionv1.AdmissionReview) *httptest.Server {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Request == nil {
			t.Errorf("webhook got no AdmissionReview: %v", err)
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		req := in.Request
		var pod corev1.Pod
		if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
			t.Errorf("review object is not a Pod: %v", err)
		}
		if r.Method != http.MethodPost || r.URL.Path != "/mutate-v1-pod" || r.Header.Get("Content-Type") != "application/json" ||
			in.APIVersion != "admission.k8s.io/v1" || in.Kind != "AdmissionReview" ||
			req.UID == "" || req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" || req.Resource.Resource != "pods" ||
			req.DryRun == nil || !*req.DryRun || len(pod.Labels) != 0 || pod.Namespace != req.Namespace || req.Namespace == "" {
			t.Errorf("webhook-check sent %s %s %+v with Pod %+v, want a dry-run CREATE review of an unlabelled Pod", r.Method, r.URL.Path, req, pod)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(answer(req))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// caFile writes the server's certificate as a PEM file, the way the chart
// mounts ca.crt.
func caFile(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.crt")
	block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(path, block, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// otherCAFile writes a freshly made CA certificate that signed nothing the
// servers use. (Every httptest server shares one certificate.)
func otherCAFile(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runCheck runs webhook-check in-process with a live context (runCommand's
// is cancelled).
func runCheck(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), append([]string{"webhook-check"}, args...), fakeEnv(env), &stdout, &stderr)
	return result{err: err, stdout: stdout.String(), stderr: stderr.String()}
}

func review(uid types.UID, allowed bool, msg string) *admissionv1.AdmissionReview {
	return &admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Response: &admissionv1.AdmissionResponse{UID: uid, Allowed: allowed, Result: &metav1.Status{Message: msg}},
	}
}

func TestWebhookCheck(t *testing.T) {
	t.Parallel()
	allow := func(r *admissionv1.AdmissionRequest) *admissionv1.AdmissionReview { return review(r.UID, true, "") }
	tests := []struct {
		name     string
		answer   func(*admissionv1.AdmissionRequest) *admissionv1.AdmissionReview
		status   int  // when not 0, the server answers this status instead
		untrusts bool // --ca-file holds another server's certificate
		wantErr  string
	}{
		{name: "allowed", answer: allow},
		{name: "wrong UID", answer: func(*admissionv1.AdmissionRequest) *admissionv1.AdmissionReview {
			return review("another-uid", true, "")
		}, wantErr: `answered for UID "another-uid"`},
		{name: "denied", answer: func(r *admissionv1.AdmissionRequest) *admissionv1.AdmissionReview {
			return review(r.UID, false, "Gatehouse protects this Pod")
		}, wantErr: "webhook refused the test Pod: Gatehouse protects this Pod"},
		{name: "no response", answer: func(*admissionv1.AdmissionRequest) *admissionv1.AdmissionReview {
			return &admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}}
		}, wantErr: "has no response"},
		{name: "not a v1 review", answer: func(r *admissionv1.AdmissionRequest) *admissionv1.AdmissionReview {
			rv := review(r.UID, true, "")
			rv.APIVersion = "admission.k8s.io/v1beta1"
			return rv
		}, wantErr: "not an admission.k8s.io/v1 AdmissionReview"},
		{name: "HTTP error", answer: allow, status: http.StatusInternalServerError, wantErr: "webhook answered HTTP 500"},
		{name: "untrusted certificate", answer: allow, untrusts: true, wantErr: "not trusted by --ca-file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := fakeWebhook(t, tc.answer)
			if tc.status != 0 {
				srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					http.Error(w, "boom", tc.status)
				})
			}
			ca := caFile(t, srv)
			if tc.untrusts {
				ca = otherCAFile(t)
			}
			r := runCheck(t, nil, "--url", srv.URL+"/mutate-v1-pod", "--ca-file", ca)
			if tc.wantErr == "" {
				if r.err != nil || !strings.Contains(r.stdout, "allowed the test Pod") {
					t.Fatalf("webhook-check: err %v, stdout %q; want success", r.err, r.stdout)
				}
				return
			}
			if r.err == nil || !strings.Contains(r.err.Error(), tc.wantErr) {
				t.Fatalf("webhook-check: err %v, want one containing %q", r.err, tc.wantErr)
			}
			if got := exitCode(r.err); got != 1 {
				t.Errorf("exit code %d, want 1", got)
			}
		})
	}
}

func TestWebhookCheckUsage(t *testing.T) {
	t.Parallel()
	r := runCommand(t, []string{"webhook-check", "--url", "http://127.0.0.1:9443/mutate-v1-pod"}, nil)
	if exitCode(r.err) != 2 {
		t.Fatalf("exit code %d (err %v), want 2", exitCode(r.err), r.err)
	}
	for _, want := range []string{"--url", "--ca-file", "--webhook-configuration"} {
		if !strings.Contains(r.err.Error(), want) {
			t.Errorf("error %q does not name %s", r.err, want)
		}
	}
	for _, args := range [][]string{
		{"--ca-file", "ca.crt", "--webhook-configuration", "gatehouse"},
		{"--ca-file", "ca.crt", "--kubeconfig", "kubeconfig"},
	} {
		r := runCommand(t, append([]string{"webhook-check", "--url", "https://127.0.0.1:1/mutate-v1-pod"}, args...), nil)
		if exitCode(r.err) != 2 || !strings.Contains(r.err.Error(), args[2]) {
			t.Errorf("webhook-check %q: err %v, want a usage error naming %s", args, r.err, args[2])
		}
	}
	r = runCheck(t, nil, "--url", "https://127.0.0.1:1/mutate-v1-pod", "--ca-file", filepath.Join(t.TempDir(), "missing"))
	if r.err == nil || !strings.Contains(r.err.Error(), "--ca-file") {
		t.Errorf("missing CA file: err %v, want one naming --ca-file", r.err)
	}
	r = runCommand(t, []string{"webhook-check", "--help"}, nil)
	for _, flag := range []string{"--url ", "--webhook-configuration ", "--ca-file ", "--kubeconfig ", "--timeout ", "--namespace "} {
		if r.err != nil || !strings.Contains(r.stdout, flag) {
			t.Errorf("webhook-check --help lacks %s (err %v)", flag, r.err)
		}
	}
}

// fakeAPIServer serves GET of the MutatingWebhookConfigurations in mwcs
// by name (404 for others), or answers status to everything when it is
// not 0, over TLS on loopback. It returns a kubeconfig file for it with a
// bearer token it requires.
func fakeAPIServer(t *testing.T, status int, mwcs ...*admissionregistrationv1.MutatingWebhookConfiguration) string {
	t.Helper()
	const token = "webhook-check-token"
	const prefix = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/"
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		name, ok := strings.CutPrefix(r.URL.Path, prefix)
		if r.Method != http.MethodGet || !ok || r.Header.Get("Authorization") != "Bearer "+token {
			t.Errorf("webhook-check asked the API server %s %s (Authorization %q), want a GET of one MutatingWebhookConfiguration with the kubeconfig's token",
				r.Method, r.URL.Path, r.Header.Get("Authorization"))
		}
		answer := func(code int, reason metav1.StatusReason) {
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(&metav1.Status{
				TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"},
				Status:   metav1.StatusFailure, Reason: reason, Code: int32(code),
				Message: fmt.Sprintf("mutatingwebhookconfigurations %q: %s", name, reason),
			})
		}
		if status != 0 {
			answer(status, metav1.StatusReasonForbidden)
			return
		}
		for _, mwc := range mwcs {
			if mwc.Name == name {
				_ = json.NewEncoder(w).Encode(mwc)
				return
			}
		}
		answer(http.StatusNotFound, metav1.StatusReasonNotFound)
	}))
	t.Cleanup(srv.Close)
	ca := base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	return writeFile(t, "kubeconfig", fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
  - name: fake
    cluster: {server: %q, certificate-authority-data: %s}
users:
  - name: webhook-check
    user: {token: %s}
contexts:
  - name: fake
    context: {cluster: fake, user: webhook-check}
current-context: fake
`, srv.URL, ca, token))
}

// TestWebhookCheckConfiguration: with --webhook-configuration the check
// trusts only the caBundle the API server has, and only when the webhook
// calls --url.
func TestWebhookCheckConfiguration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		change  func(mwc *admissionregistrationv1.MutatingWebhookConfiguration) // of one that calls the fake webhook with its CA
		flag    string                                                          // --webhook-configuration, default the configuration's name
		status  int                                                             // when not 0, the API server answers this status
		viaEnv  bool                                                            // the kubeconfig comes from $KUBECONFIG
		wantErr string
	}{
		{name: "trusted caBundle"},
		{name: "kubeconfig from $KUBECONFIG", viaEnv: true},
		{name: "empty caBundle", change: func(mwc *admissionregistrationv1.MutatingWebhookConfiguration) {
			mwc.Webhooks[0].ClientConfig.CABundle = nil
		}, wantErr: "the API server has no CA for the webhook yet: webhook pods.gatehouse.dev of MutatingWebhookConfiguration gatehouse has an empty caBundle"},
		{name: "stale caBundle", change: func(mwc *admissionregistrationv1.MutatingWebhookConfiguration) {
			b, err := os.ReadFile(otherCAFile(t))
			if err != nil {
				t.Fatal(err)
			}
			mwc.Webhooks[0].ClientConfig.CABundle = b
		}, wantErr: "not trusted by the caBundle of MutatingWebhookConfiguration gatehouse"},
		{name: "caBundle without PEM", change: func(mwc *admissionregistrationv1.MutatingWebhookConfiguration) {
			mwc.Webhooks[0].ClientConfig.CABundle = []byte("not a certificate")
		}, wantErr: "holds no PEM certificate"},
		{name: "calls another URL", change: func(mwc *admissionregistrationv1.MutatingWebhookConfiguration) {
			mwc.Webhooks[0].ClientConfig.URL = ptr.To(*mwc.Webhooks[0].ClientConfig.URL + "-old")
		}, wantErr: "/mutate-v1-pod-old, not --url"},
		{name: "calls a Service", change: func(mwc *admissionregistrationv1.MutatingWebhookConfiguration) {
			mwc.Webhooks[0].ClientConfig.URL = nil
			mwc.Webhooks[0].ClientConfig.Service = &admissionregistrationv1.ServiceReference{
				Name: "gatehouse-webhook", Namespace: "gatehouse-system", Path: ptr.To("/mutate-v1-pod"),
			}
		}, wantErr: "calls Service gatehouse-system/gatehouse-webhook on port 443 at path /mutate-v1-pod, not --url"},
		{name: "no such webhook", change: func(mwc *admissionregistrationv1.MutatingWebhookConfiguration) {
			mwc.Webhooks[0].Name = "pods.example.com"
		}, wantErr: "MutatingWebhookConfiguration gatehouse has no webhook pods.gatehouse.dev"},
		{name: "no such configuration", flag: "gatehouse-other", wantErr: "MutatingWebhookConfiguration gatehouse-other does not exist"},
		{name: "forbidden", status: http.StatusForbidden, wantErr: "may not get MutatingWebhookConfiguration gatehouse"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int32
			srv := fakeWebhook(t, func(r *admissionv1.AdmissionRequest) *admissionv1.AdmissionReview {
				calls.Add(1)
				return review(r.UID, true, "")
			})
			webhookURL := srv.URL + "/mutate-v1-pod"
			mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
				TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
				ObjectMeta: metav1.ObjectMeta{Name: "gatehouse"},
				Webhooks: []admissionregistrationv1.MutatingWebhook{{
					Name: "pods.gatehouse.dev",
					ClientConfig: admissionregistrationv1.WebhookClientConfig{
						URL:      ptr.To(webhookURL),
						CABundle: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}),
					},
				}},
			}
			if tc.change != nil {
				tc.change(mwc)
			}
			kubeconfig := fakeAPIServer(t, tc.status, mwc)
			args := []string{"--url", webhookURL, "--webhook-configuration", cmp.Or(tc.flag, mwc.Name)}
			var env map[string]string
			if tc.viaEnv {
				env = map[string]string{"KUBECONFIG": kubeconfig}
			} else {
				args = append(args, "--kubeconfig", kubeconfig)
			}
			r := runCheck(t, env, args...)
			if tc.wantErr == "" {
				if r.err != nil || !strings.Contains(r.stdout, "allowed the test Pod") || calls.Load() != 1 {
					t.Fatalf("webhook-check: err %v, stdout %q, %d calls; want success after one call", r.err, r.stdout, calls.Load())
				}
				return
			}
			if r.err == nil || !strings.Contains(r.err.Error(), tc.wantErr) {
				t.Fatalf("webhook-check: err %v, want one containing %q", r.err, tc.wantErr)
			}
			if got := exitCode(r.err); got != 1 {
				t.Errorf("exit code %d, want 1", got)
			}
		})
	}
}

func TestCallsURL(t *testing.T) {
	t.Parallel()
	svc := func(port *int32, path *string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
			Name: "gatehouse-webhook", Namespace: "gatehouse-system", Port: port, Path: path,
		}}
	}
	byURL := func(u string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{URL: &u}
	}
	const svcURL = "https://gatehouse-webhook.gatehouse-system.svc:443/mutate-v1-pod"
	tests := []struct {
		name string
		cc   admissionregistrationv1.WebhookClientConfig
		url  string
		ok   bool
	}{
		{"Service", svc(ptr.To[int32](443), ptr.To("/mutate-v1-pod")), svcURL, true},
		{"Service, default port", svc(nil, ptr.To("/mutate-v1-pod")), "https://gatehouse-webhook.gatehouse-system.svc/mutate-v1-pod", true},
		{"Service in the cluster domain", svc(nil, ptr.To("/mutate-v1-pod")), "https://gatehouse-webhook.gatehouse-system.svc.cluster.local/mutate-v1-pod", true},
		{"Service without path", svc(nil, nil), "https://gatehouse-webhook.gatehouse-system.svc/", true},
		{"another Service", svc(nil, ptr.To("/mutate-v1-pod")), "https://gatehouse-webhook-old.gatehouse-system.svc/mutate-v1-pod", false},
		{"another namespace", svc(nil, ptr.To("/mutate-v1-pod")), "https://gatehouse-webhook.other.svc/mutate-v1-pod", false},
		{"Service's other port", svc(ptr.To[int32](8443), ptr.To("/mutate-v1-pod")), svcURL, false},
		{"Service's other path", svc(nil, ptr.To("/mutate")), svcURL, false},
		{"Service by a loopback URL", svc(nil, ptr.To("/mutate-v1-pod")), "https://127.0.0.1:9443/mutate-v1-pod", false},
		{"URL", byURL("https://127.0.0.1:9443/mutate-v1-pod"), "https://127.0.0.1:9443/mutate-v1-pod", true},
		{"URL, default port", byURL("https://Webhook.example:443/mutate-v1-pod"), "https://webhook.example/mutate-v1-pod", true},
		{"URL, other port", byURL("https://127.0.0.1:9444/mutate-v1-pod"), "https://127.0.0.1:9443/mutate-v1-pod", false},
		{"URL, other host", byURL("https://127.0.0.2:9443/mutate-v1-pod"), "https://127.0.0.1:9443/mutate-v1-pod", false},
		{"URL, other path", byURL("https://127.0.0.1:9443/mutate"), "https://127.0.0.1:9443/mutate-v1-pod", false},
		{"URL for a Service's name", byURL(svcURL), svcURL, true},
		{"neither", admissionregistrationv1.WebhookClientConfig{}, svcURL, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			target, err := url.Parse(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			if err := callsURL(tc.cc, target); (err == nil) != tc.ok {
				t.Errorf("callsURL(%+v, %s) = %v, want ok %v", tc.cc, tc.url, err, tc.ok)
			}
		})
	}
}
