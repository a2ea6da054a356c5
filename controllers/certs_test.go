package controllers_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

// TestWebhookCertificate: without --webhook-cert-dir the controller makes a
// CA and a serving certificate in a Secret, writes them for the webhook
// server, keeps the caBundle current, and renews the certificate before it
// expires without changing the CA.
func TestWebhookCertificate(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	whName := "gatehouse-test-" + ns
	createIdleWebhook(t, whName, ns)
	dir := t.TempDir()
	now := time.Now()
	opts := controllers.WebhookCertOptions{Namespace: ns, SecretName: "gatehouse-webhook-tls", Service: "gatehouse-webhook",
		Configuration: whName, Dir: dir, Now: func() time.Time { return now }}
	if err := controllers.SyncWebhookCertificate(t.Context(), k8s, k8s, opts, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if err := k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-webhook-tls"}, &s); err != nil {
		t.Fatal(err)
	}
	leaf := verifyServing(t, dir, s.Data["ca.crt"], "gatehouse-webhook."+ns+".svc")
	var wh admissionv1.MutatingWebhookConfiguration
	if err := k8s.Get(t.Context(), client.ObjectKey{Name: whName}, &wh); err != nil {
		t.Fatal(err)
	}
	if string(wh.Webhooks[0].ClientConfig.CABundle) != string(s.Data["ca.crt"]) {
		t.Error("caBundle is not the CA")
	}
	// A second replica (or a restart) reuses the same certificate.
	if err := controllers.SyncWebhookCertificate(t.Context(), k8s, k8s, opts, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	if again := verifyServing(t, dir, s.Data["ca.crt"], "gatehouse-webhook."+ns+".svc"); !again.Equal(leaf) {
		t.Error("a second sync replaced a valid certificate")
	}
	// Close to expiry it is renewed under the same CA.
	now = leaf.NotAfter.Add(-10 * 24 * time.Hour)
	if err := controllers.SyncWebhookCertificate(t.Context(), k8s, k8s, opts, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	renewed := verifyServing(t, dir, s.Data["ca.crt"], "gatehouse-webhook."+ns+".svc")
	if renewed.Equal(leaf) || !renewed.NotAfter.After(leaf.NotAfter) {
		t.Error("the certificate was not renewed before expiry")
	}
}

// verifyServing checks the files in dir: a key pair whose certificate chains
// to ca for host.
func verifyServing(t *testing.T, dir string, ca []byte, host string) *x509.Certificate {
	t.Helper()
	crt, err := os.ReadFile(filepath.Join(dir, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pool, CurrentTime: leaf.NotBefore.Add(2 * time.Hour)}); err != nil {
		t.Fatalf("serving certificate does not verify for %s: %v", host, err)
	}
	return leaf
}

// TestWebhookCertificateURL: with --webhook-url (a controller outside the
// cluster) the existing certificate is reissued to cover the URL's host, and
// the webhook configuration is pointed at the URL instead of the Service.
func TestWebhookCertificateURL(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t, nil)
	whName := "gatehouse-url-" + ns
	createIdleWebhook(t, whName, ns)
	dir := t.TempDir()
	opts := controllers.WebhookCertOptions{Namespace: ns, SecretName: "gatehouse-webhook-tls", Service: "gatehouse-webhook",
		Configuration: whName, Dir: dir}
	if err := controllers.SyncWebhookCertificate(t.Context(), k8s, k8s, opts, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if err := k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "gatehouse-webhook-tls"}, &s); err != nil {
		t.Fatal(err)
	}
	inCluster := verifyServing(t, dir, s.Data["ca.crt"], "gatehouse-webhook."+ns+".svc")
	if inCluster.VerifyHostname("127.0.0.1") == nil {
		t.Fatal("the in-cluster certificate already covers 127.0.0.1; the test proves nothing")
	}

	opts.URL = "https://127.0.0.1:9443/mutate-v1-pod"
	if err := controllers.SyncWebhookCertificate(t.Context(), k8s, k8s, opts, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	verifyServing(t, dir, s.Data["ca.crt"], "127.0.0.1")
	verifyServing(t, dir, s.Data["ca.crt"], "gatehouse-webhook."+ns+".svc")
	var wh admissionv1.MutatingWebhookConfiguration
	if err := k8s.Get(t.Context(), client.ObjectKey{Name: whName}, &wh); err != nil {
		t.Fatal(err)
	}
	cc := wh.Webhooks[0].ClientConfig
	if cc.URL == nil || *cc.URL != opts.URL || cc.Service != nil {
		t.Errorf("clientConfig = url %v, service %v; want url %s and no service", cc.URL, cc.Service, opts.URL)
	}
	if string(cc.CABundle) != string(s.Data["ca.crt"]) {
		t.Error("caBundle is not the CA")
	}

	// Back in the cluster (no URL), the Service is the way in again.
	opts.URL = ""
	if err := controllers.SyncWebhookCertificate(t.Context(), k8s, k8s, opts, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Get(t.Context(), client.ObjectKey{Name: whName}, &wh); err != nil {
		t.Fatal(err)
	}
	cc = wh.Webhooks[0].ClientConfig
	if cc.URL != nil || cc.Service == nil || cc.Service.Name != "gatehouse-webhook" || cc.Service.Namespace != ns ||
		ptr.Deref(cc.Service.Path, "") != controllers.WebhookPath || ptr.Deref(cc.Service.Port, 0) != 443 {
		t.Errorf("clientConfig = url %v, service %+v; want the Service gatehouse-webhook in %s again", cc.URL, cc.Service, ns)
	}
}

// createIdleWebhook creates a webhook configuration for the Service
// gatehouse-webhook in ns that matches no object, so it never affects
// other tests.
func createIdleWebhook(t *testing.T, name, ns string) {
	t.Helper()
	none := admissionv1.SideEffectClassNone
	create(t, &admissionv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionv1.MutatingWebhook{{
			Name: "pods.gatehouse.dev", SideEffects: &none, AdmissionReviewVersions: []string{"v1"},
			ClientConfig:   admissionv1.WebhookClientConfig{Service: &admissionv1.ServiceReference{Namespace: ns, Name: "gatehouse-webhook", Path: ptr.To("/mutate-v1-pod")}},
			ObjectSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"never": ns}},
			Rules: []admissionv1.RuleWithOperations{{Operations: []admissionv1.OperationType{admissionv1.Create},
				Rule: admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
		}},
	})
}
