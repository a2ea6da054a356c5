package controllers

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Webhook certificate lifetimes. The serving certificate is renewed when
// less than certRenewBefore remains; the CA outlives many renewals, so the
// caBundle rarely changes.
const (
	caLifetime      = 10 * 365 * 24 * time.Hour
	certLifetime    = 365 * 24 * time.Hour
	certRenewBefore = 30 * 24 * time.Hour
	certCheckEvery  = time.Hour
)

// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get;patch

// certManager makes and renews the webhook's serving certificate when no
// --webhook-cert-dir is given. The CA and certificate live in a Secret in
// the controller's namespace, so every replica serves the same one; each
// replica writes them to its certificate directory (which the webhook
// server watches) and keeps the webhook configuration's caBundle current.
type certManager struct {
	reader      client.Reader // uncached: the Secret is not in the cache
	client      client.Client
	namespace   string
	secretName  string
	service     string // the webhook Service's name, for the certificate's names
	webhookName string // the MutatingWebhookConfiguration to keep current
	url         string // when set, the API server reaches the webhook here
	dir         string
	log         logr.Logger
	now         func() time.Time
}

// WebhookCertOptions say where the self-made webhook certificate lives and
// what it is for.
type WebhookCertOptions struct {
	// Namespace and SecretName hold the CA and the serving certificate.
	Namespace, SecretName string
	// Service is the webhook Service's name; Configuration the
	// MutatingWebhookConfiguration whose caBundle is kept current.
	Service, Configuration string
	// URL, when set, replaces the Service in the webhook configuration and
	// its host joins the certificate's names (a controller outside the
	// cluster).
	URL string
	// Dir receives tls.crt and tls.key for the webhook server.
	Dir string
	Now func() time.Time
}

// SyncWebhookCertificate makes or renews the webhook certificate in its
// Secret, writes it to opts.Dir and sets the caBundle; Run calls it at start
// and then every hour. reader must not be a cache.
func SyncWebhookCertificate(ctx context.Context, reader client.Reader, writer client.Client, opts WebhookCertOptions, log logr.Logger) error {
	return newCertManager(reader, writer, opts, log).sync(ctx)
}

func newCertManager(reader client.Reader, writer client.Client, opts WebhookCertOptions, log logr.Logger) *certManager {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &certManager{
		reader: reader, client: writer, namespace: opts.Namespace, secretName: opts.SecretName,
		service: opts.Service, webhookName: opts.Configuration, url: opts.URL, dir: opts.Dir, log: log, now: opts.Now,
	}
}

// NeedLeaderElection is false: every replica serves the webhook.
func (c *certManager) NeedLeaderElection() bool { return false }

// Start keeps the certificate current until ctx ends.
func (c *certManager) Start(ctx context.Context) error {
	t := time.NewTicker(certCheckEvery)
	defer t.Stop()
	for {
		if err := c.sync(ctx); err != nil {
			c.log.Error(err, "Webhook certificate not current; retrying", "secret", c.secretName)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sync makes sure the Secret holds a valid certificate, writes it to dir and
// patches the caBundle.
func (c *certManager) sync(ctx context.Context) error {
	var s corev1.Secret
	err := c.reader.Get(ctx, client.ObjectKey{Namespace: c.namespace, Name: c.secretName}, &s)
	switch {
	case apierrors.IsNotFound(err):
		ca, caKey, err := newCA(c.now())
		if err != nil {
			return err
		}
		s = corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: c.secretName, Namespace: c.namespace}}
		if s.Data, err = c.issue(ca, caKey); err != nil {
			return err
		}
		if err := c.client.Create(ctx, &s); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return c.sync(ctx) // another replica was first
			}
			return fmt.Errorf("create webhook certificate secret: %w", err)
		}
		c.log.Info("Webhook certificate created", "secret", c.secretName)
	case err != nil:
		return fmt.Errorf("read webhook certificate secret: %w", err)
	default:
		if renew, err := c.needsRenewal(s.Data); err != nil || renew {
			ca, caKey, perr := parseCA(s.Data)
			if perr != nil {
				if ca, caKey, perr = newCA(c.now()); perr != nil {
					return perr
				}
			}
			if s.Data, err = c.issue(ca, caKey); err != nil {
				return err
			}
			if err := c.client.Update(ctx, &s); err != nil {
				return fmt.Errorf("renew webhook certificate: %w", err)
			}
			c.log.Info("Webhook certificate renewed", "secret", c.secretName)
		}
	}
	if err := c.write(s.Data); err != nil {
		return err
	}
	return c.patchCABundle(ctx, s.Data["ca.crt"])
}

// issue signs a serving certificate for the webhook Service's names.
func (c *certManager) issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey) (map[string][]byte, error) {
	names, ips := c.names()
	return issueServing(ca, caKey, names, ips, c.now())
}

// issueServing signs a serving certificate for names and ips with the CA,
// and returns it with its key and the CA as a Secret's data.
func issueServing(ca *x509.Certificate, caKey *ecdsa.PrivateKey, names []string, ips []net.IP, now time.Time) (map[string][]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	cn := "gatehouse"
	if len(names) > 0 {
		cn = names[len(names)/2]
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     names,
		IPAddresses:  ips,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("sign serving certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	caKeyDER, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		"ca.crt":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}),
		"ca.key":  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: caKeyDER}),
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// names are the certificate's DNS names and IP addresses: the Service's
// names and the --webhook-url host.
func (c *certManager) names() ([]string, []net.IP) {
	svc := c.service + "." + c.namespace + ".svc"
	names := []string{c.service, c.service + "." + c.namespace, svc, svc + ".cluster.local"}
	var ips []net.IP
	if host := c.urlHost(); host != "" {
		if ip := net.ParseIP(host); ip != nil {
			ips = append(ips, ip)
		} else {
			names = append(names, host)
		}
	}
	return names, ips
}

func (c *certManager) urlHost() string {
	if c.url == "" {
		return ""
	}
	u, err := url.Parse(c.url)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

func (c *certManager) needsRenewal(data map[string][]byte) (bool, error) {
	pair, err := tls.X509KeyPair(data["tls.crt"], data["tls.key"])
	if err != nil {
		return true, err
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return true, err
	}
	// A certificate made for another Service or URL is renewed at once.
	for _, host := range []string{c.service + "." + c.namespace + ".svc", c.urlHost()} {
		if host != "" && leaf.VerifyHostname(host) != nil {
			return true, nil
		}
	}
	return c.now().Add(certRenewBefore).After(leaf.NotAfter), nil
}

// write puts tls.crt and tls.key in dir when they changed; the webhook
// server's certificate watcher picks them up.
func (c *certManager) write(data map[string][]byte) error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return err
	}
	for _, name := range []string{"tls.crt", "tls.key"} {
		path := filepath.Join(c.dir, name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data[name]) {
			continue
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, data[name], 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return nil
}

// patchCABundle sets the CA on every webhook of the configuration.
func (c *certManager) patchCABundle(ctx context.Context, ca []byte) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error { return c.tryPatchCABundle(ctx, ca) })
}

func (c *certManager) tryPatchCABundle(ctx context.Context, ca []byte) error {
	var wh admissionv1.MutatingWebhookConfiguration
	if err := c.reader.Get(ctx, client.ObjectKey{Name: c.webhookName}, &wh); err != nil {
		return fmt.Errorf("read MutatingWebhookConfiguration %s: %w", c.webhookName, err)
	}
	orig := wh.DeepCopy()
	changed := false
	for i := range wh.Webhooks {
		cc := &wh.Webhooks[i].ClientConfig
		if !bytes.Equal(cc.CABundle, ca) {
			cc.CABundle = ca
			changed = true
		}
		switch {
		case c.url != "" && (cc.URL == nil || *cc.URL != c.url):
			cc.URL, cc.Service = &c.url, nil
			changed = true
		case c.url == "" && cc.URL != nil:
			// A controller run earlier with --webhook-url left the
			// configuration pointing at it; in the cluster, the Service
			// is the way in again.
			cc.URL = nil
			cc.Service = &admissionv1.ServiceReference{
				Namespace: c.namespace, Name: c.service, Path: ptr.To(WebhookPath), Port: ptr.To[int32](443),
			}
			changed = true
		}
	}
	if !changed {
		return nil
	}
	// The patch replaces the webhooks list, which the namespace scope is
	// also written to: the optimistic lock makes a concurrent change a
	// conflict, retried, rather than undone.
	if err := c.client.Patch(ctx, &wh, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("update caBundle of %s: %w", c.webhookName, err)
	}
	c.log.Info("Webhook caBundle updated", "webhook", c.webhookName)
	return nil
}

func newCA(now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "gatehouse-webhook-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("make webhook CA: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	return ca, key, err
}

func parseCA(data map[string][]byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, _ := pem.Decode(data["ca.crt"])
	kb, _ := pem.Decode(data["ca.key"])
	if cb == nil || kb == nil {
		return nil, nil, errors.New("no CA in the secret")
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	return ca, key, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// certNotAfter is the notAfter of dir/tls.crt as Unix seconds, 0 when it
// cannot be read.
func certNotAfter(dir string) float64 {
	if dir == "" {
		return 0
	}
	raw, err := os.ReadFile(filepath.Join(dir, "tls.crt"))
	if err != nil {
		return 0
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return 0
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return 0
	}
	return float64(cert.NotAfter.Unix())
}

// brokerCerts issues the token broker's serving certificate from the
// webhook's CA (which the controller makes itself when it has no
// --webhook-cert-dir) into the broker's Secret, and renews it, so that
// sidecars can trust the broker with the CA the controller copies to them.
type brokerCerts struct {
	reader    client.Reader // uncached
	client    client.Client
	namespace string
	caSecret  string // the webhook's certificate Secret, with the CA
	secret    string // the broker's
	host      string // the broker URL's host
	log       logr.Logger
	now       func() time.Time
}

// NeedLeaderElection is false: the replicas agree on the Secret through
// the API server (create fails for all but one; updates are
// optimistic), and the broker must get its certificate even while no
// replica leads.
func (b *brokerCerts) NeedLeaderElection() bool { return false }

// Start keeps the broker's certificate current until ctx ends.
func (b *brokerCerts) Start(ctx context.Context) error {
	t := time.NewTicker(certCheckEvery)
	defer t.Stop()
	for {
		if err := b.sync(ctx); err != nil {
			b.log.Error(err, "Broker certificate not current; retrying", "secret", b.secret)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// names are the broker certificate's DNS names and IP addresses: the
// broker URL's host, and for a Service name (<svc>.<ns>.svc) its other
// forms.
func (b *brokerCerts) names() ([]string, []net.IP) {
	if ip := net.ParseIP(b.host); ip != nil {
		return nil, []net.IP{ip}
	}
	names := []string{b.host}
	if svc, ok := strings.CutSuffix(strings.TrimSuffix(b.host, ".cluster.local"), ".svc"); ok {
		name, ns, _ := strings.Cut(svc, ".")
		names = []string{name, svc, name + "." + ns + ".svc", name + "." + ns + ".svc.cluster.local"}
	}
	return names, nil
}

func (b *brokerCerts) sync(ctx context.Context) error {
	var caSecret corev1.Secret
	if err := b.reader.Get(ctx, client.ObjectKey{Namespace: b.namespace, Name: b.caSecret}, &caSecret); err != nil {
		return fmt.Errorf("read the CA: %w", err)
	}
	ca, caKey, err := parseCA(caSecret.Data)
	if err != nil {
		return fmt.Errorf("read the CA in %s: %w", b.caSecret, err)
	}
	var s corev1.Secret
	err = b.reader.Get(ctx, client.ObjectKey{Namespace: b.namespace, Name: b.secret}, &s)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("read broker certificate secret: %w", err)
	}
	created := apierrors.IsNotFound(err)
	if !created && !b.needsRenewal(s.Data, ca) {
		return nil
	}
	names, ips := b.names()
	data, err := issueServing(ca, caKey, names, ips, b.now())
	if err != nil {
		return err
	}
	delete(data, "ca.key")
	s.Data = data
	if created {
		s.ObjectMeta = metav1.ObjectMeta{Name: b.secret, Namespace: b.namespace}
		s.Type = corev1.SecretTypeTLS
		if err := b.client.Create(ctx, &s); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return nil // another replica was first
			}
			return fmt.Errorf("create broker certificate secret: %w", err)
		}
		b.log.Info("Broker certificate created", "secret", b.secret)
		return nil
	}
	if err := b.client.Update(ctx, &s); err != nil {
		return fmt.Errorf("renew broker certificate: %w", err)
	}
	b.log.Info("Broker certificate renewed", "secret", b.secret)
	return nil
}

// needsRenewal is true for a certificate that is unreadable, for another
// host, not signed by the current CA, or close to expiry.
func (b *brokerCerts) needsRenewal(data map[string][]byte, ca *x509.Certificate) bool {
	pair, err := tls.X509KeyPair(data["tls.crt"], data["tls.key"])
	if err != nil {
		return true
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil || leaf.VerifyHostname(b.host) != nil || leaf.CheckSignatureFrom(ca) != nil {
		return true
	}
	if !bytes.Equal(data["ca.crt"], pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})) {
		return true
	}
	return b.now().Add(certRenewBefore).After(leaf.NotAfter)
}
