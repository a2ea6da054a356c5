//go:build !sidecar

package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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
func runCheck(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), append([]string{"webhook-check"}, args...), fakeEnv(nil), &stdout, &stderr)
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
			r := runCheck(t, "--url", srv.URL+"/mutate-v1-pod", "--ca-file", ca)
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
	for _, want := range []string{"--url", "--ca-file"} {
		if !strings.Contains(r.err.Error(), want) {
			t.Errorf("error %q does not name %s", r.err, want)
		}
	}
	r = runCheck(t, "--url", "https://127.0.0.1:1/mutate-v1-pod", "--ca-file", filepath.Join(t.TempDir(), "missing"))
	if r.err == nil || !strings.Contains(r.err.Error(), "--ca-file") {
		t.Errorf("missing CA file: err %v, want one naming --ca-file", r.err)
	}
	r = runCommand(t, []string{"webhook-check", "--help"}, nil)
	for _, flag := range []string{"--url ", "--ca-file ", "--timeout ", "--namespace "} {
		if r.err != nil || !strings.Contains(r.stdout, flag) {
			t.Errorf("webhook-check --help lacks %s (err %v)", flag, r.err)
		}
	}
}
