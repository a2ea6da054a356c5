//go:build !sidecar

package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	admissionregistrationv1client "k8s.io/client-go/kubernetes/typed/admissionregistration/v1"
	"k8s.io/utils/ptr"

	"github.com/gatehouse-dev/gatehouse/controllers"
)

const webhookCheckUsage = `Usage: gatehouse webhook-check --url URL (--webhook-configuration NAME | --ca-file FILE) [flags]

Calls the controller's Pod mutating webhook at --url the way the API server
does, with a harmless AdmissionReview (a dry-run CREATE of an unlabelled Pod
in a namespace without Ingresses). It succeeds only when the webhook's
certificate verifies against the one CA it trusts and the answer is an
admission.k8s.io/v1 AdmissionReview that allows the Pod under the request's
UID.

With --webhook-configuration it first reads that MutatingWebhookConfiguration
from the API server (with the kubeconfig of --kubeconfig or $KUBECONFIG when
given, else in-cluster). It fails unless its webhook pods.gatehouse.dev calls
--url (the same Service name, namespace, port and path, or the same URL) and
has a caBundle, and then trusts only that caBundle: the CA the API server
itself uses. The chart's "helm test" runs this way when the chart creates
RBAC and ServiceAccounts.

With --ca-file it trusts only the CA in that file and reads nothing from the
API server, so a missing or stale caBundle goes unnoticed.

It does not check the webhook's rules, namespaceSelector or failurePolicy,
nor that the API server can reach --url from where it runs.

Flags:
`

// webhookCheckNamespace is the test Pod's default namespace: one that holds
// no Ingress, so the webhook has nothing to inject.
const webhookCheckNamespace = "gatehouse-webhook-check"

func runWebhookCheck(ctx context.Context, args []string, env func(string) (string, bool), stdout io.Writer) error {
	fs := flag.NewFlagSet("gatehouse webhook-check", flag.ContinueOnError)
	fs.SetOutput(stdout)
	rawURL := fs.String("url", "", "https `URL` of the webhook, e.g. https://gatehouse-webhook.gatehouse-system.svc:443/mutate-v1-pod (required)")
	configuration := fs.String("webhook-configuration", "", "`name` of the MutatingWebhookConfiguration whose caBundle to trust, read from the API server (this or --ca-file)")
	caFile := fs.String("ca-file", "", "PEM `file` with the CA to trust instead, e.g. the ca.crt key of the webhook's Secret (this or --webhook-configuration)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig `file` for --webhook-configuration when not running in a cluster (default $KUBECONFIG)")
	namespace := fs.String("namespace", webhookCheckNamespace, "`namespace` of the test Pod; one without Gatehouse Ingresses")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for each answer")
	fs.Usage = flagUsage(fs, webhookCheckUsage)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	var errs []error
	target, err := url.Parse(*rawURL)
	if err != nil || target.Scheme != "https" || target.Host == "" {
		errs = append(errs, fmt.Errorf("--url: %q is not an https URL", *rawURL))
	}
	switch {
	case *caFile == "" && *configuration == "":
		errs = append(errs, errors.New("--webhook-configuration or --ca-file: one is required: the MutatingWebhookConfiguration whose caBundle to trust, or a CA file"))
	case *caFile != "" && *configuration != "":
		errs = append(errs, errors.New("--webhook-configuration and --ca-file: give only one"))
	}
	if *kubeconfig != "" && *configuration == "" {
		errs = append(errs, errors.New("--kubeconfig: only with --webhook-configuration"))
	}
	if *namespace == "" {
		errs = append(errs, errors.New("--namespace: required"))
	}
	if *timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout: %v is not positive", *timeout))
	}
	if len(fs.Args()) > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}

	var roots *x509.CertPool
	var trust string // who vouches for the CA, for error messages
	if *configuration != "" {
		if *kubeconfig == "" {
			*kubeconfig, _ = env("KUBECONFIG")
		}
		if roots, err = caBundleOf(ctx, *kubeconfig, *configuration, target, *timeout); err != nil {
			return err
		}
		trust = fmt.Sprintf("the caBundle of MutatingWebhookConfiguration %s (is it stale?)", *configuration)
	} else {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("--ca-file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--ca-file: %s holds no PEM certificate", *caFile)
		}
		trust = "--ca-file (is it the ca.crt of the webhook's Secret?)"
	}
	hc := &http.Client{
		Timeout: *timeout,
		// No proxy from the environment: the webhook is cluster-internal.
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
	}
	uid := types.UID(uuid.NewUUID())
	if err := checkWebhook(ctx, hc, *rawURL, trust, *namespace, uid); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Webhook %s allowed the test Pod (uid %s)\n", *rawURL, uid)
	return nil
}

// caBundleOf reads the MutatingWebhookConfiguration named name and returns
// the caBundle of its webhook controllers.WebhookName as the one CA to
// trust. It fails when that webhook does not call target or has no usable
// caBundle: then the API server cannot call it either.
func caBundleOf(ctx context.Context, kubeconfig, name string, target *url.URL, timeout time.Duration) (*x509.CertPool, error) {
	cfg, err := restConfigFor(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("find the API server (in-cluster, or --kubeconfig): %w", err)
	}
	cfg.Timeout = timeout
	ac, err := admissionregistrationv1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig: %w", err)
	}
	mwc, err := ac.MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("--webhook-configuration: MutatingWebhookConfiguration %s does not exist", name)
	case apierrors.IsForbidden(err):
		return nil, fmt.Errorf("--webhook-configuration: may not get MutatingWebhookConfiguration %s (does the ServiceAccount's ClusterRole name it?): %w", name, err)
	case err != nil:
		return nil, fmt.Errorf("get MutatingWebhookConfiguration %s: %w", name, err)
	}
	i := slices.IndexFunc(mwc.Webhooks, func(wh admissionregistrationv1.MutatingWebhook) bool { return wh.Name == controllers.WebhookName })
	if i < 0 {
		return nil, fmt.Errorf("--webhook-configuration: MutatingWebhookConfiguration %s has no webhook %s", name, controllers.WebhookName)
	}
	cc := mwc.Webhooks[i].ClientConfig
	if err := callsURL(cc, target); err != nil {
		return nil, fmt.Errorf("webhook %s of MutatingWebhookConfiguration %s %w", controllers.WebhookName, name, err)
	}
	if len(cc.CABundle) == 0 {
		return nil, fmt.Errorf("the API server has no CA for the webhook yet: webhook %s of MutatingWebhookConfiguration %s has an empty caBundle "+
			"(the controller sets it at start; with cert-manager, its cainjector does)", controllers.WebhookName, name)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(cc.CABundle) {
		return nil, fmt.Errorf("the API server has no usable CA for the webhook: the caBundle of webhook %s of MutatingWebhookConfiguration %s holds no PEM certificate",
			controllers.WebhookName, name)
	}
	return roots, nil
}

// callsURL returns nil when the API server, calling the webhook as cc
// says, reaches what target names: the same Service (name, namespace, port
// and path) when cc names one, else the same URL. The error says where cc
// points instead.
func callsURL(cc admissionregistrationv1.WebhookClientConfig, target *url.URL) error {
	tport := target.Port()
	if tport == "" {
		tport = "443"
	}
	tpath := cmp.Or(target.EscapedPath(), "/")
	switch {
	case cc.Service != nil:
		s := cc.Service
		port := int32(443)
		if s.Port != nil {
			port = *s.Port
		}
		path := "/"
		if s.Path != nil {
			path = cmp.Or(*s.Path, "/")
		}
		host := strings.ToLower(target.Hostname())
		svcHost := s.Name + "." + s.Namespace + ".svc"
		// Either the Service's own name or its name in a cluster domain
		// (<service>.<namespace>.svc.cluster.local).
		sameHost := host == svcHost || (strings.HasPrefix(host, svcHost+".") && len(host) > len(svcHost)+1)
		if !sameHost || tport != strconv.Itoa(int(port)) || tpath != path || target.RawQuery != "" {
			return fmt.Errorf("calls Service %s/%s on port %d at path %s, not --url %s (want https://%s:%d%s)",
				s.Namespace, s.Name, port, path, target, svcHost, port, path)
		}
		return nil
	case cc.URL != nil:
		u, err := url.Parse(*cc.URL)
		if err != nil {
			return fmt.Errorf("calls an unparsable URL %q: %w", *cc.URL, err)
		}
		port := cmp.Or(u.Port(), "443")
		if !strings.EqualFold(u.Scheme, target.Scheme) || !strings.EqualFold(u.Hostname(), target.Hostname()) || port != tport ||
			cmp.Or(u.EscapedPath(), "/") != tpath || u.RawQuery != target.RawQuery {
			return fmt.Errorf("calls %s, not --url %s", *cc.URL, target)
		}
		return nil
	default:
		return errors.New("names neither a Service nor a URL")
	}
}

// checkWebhook posts a review of a harmless Pod to the webhook at rawURL
// and returns nil only when the answer allows it under uid. trust names
// where hc's CA comes from, for the error when the certificate fails.
func checkWebhook(ctx context.Context, hc *http.Client, rawURL, trust, namespace string, uid types.UID) error {
	body, err := json.Marshal(checkReview(namespace, uid))
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	res, err := hc.Do(req)
	if err != nil {
		if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
			return fmt.Errorf("call the webhook: its certificate is not trusted by %s: %w", trust, err)
		}
		return fmt.Errorf("call the webhook: %w", err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read the webhook's answer: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("webhook answered HTTP %d: %s", res.StatusCode, snippet(raw))
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(raw, &review); err != nil {
		return fmt.Errorf("webhook's answer is not JSON: %w: %s", err, snippet(raw))
	}
	if review.APIVersion != admissionv1.SchemeGroupVersion.String() || review.Kind != "AdmissionReview" {
		return fmt.Errorf("webhook's answer is not an admission.k8s.io/v1 AdmissionReview (apiVersion %q, kind %q)", review.APIVersion, review.Kind)
	}
	r := review.Response
	switch {
	case r == nil:
		return errors.New("webhook's AdmissionReview has no response")
	case r.UID != uid:
		return fmt.Errorf("webhook answered for UID %q, not the request's %q", r.UID, uid)
	case !r.Allowed:
		msg := "no reason given"
		if r.Result != nil && r.Result.Message != "" {
			msg = r.Result.Message
		}
		return fmt.Errorf("webhook refused the test Pod: %s", msg)
	}
	return nil
}

// checkReview is the AdmissionReview the API server would send for the dry
// run creation of an unlabelled Pod in namespace: no Service selects it, so
// the webhook has nothing to inject and must allow it.
func checkReview(namespace string, uid types.UID) *admissionv1.AdmissionReview {
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "gatehouse-webhook-check", Namespace: namespace},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "check", Image: "gatehouse-webhook-check"}},
		},
	}
	raw, _ := json.Marshal(pod) // a Pod always marshals
	kind := metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}
	resource := metav1.GroupVersionResource{Version: "v1", Resource: "pods"}
	return &admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:             uid,
			Kind:            kind,
			Resource:        resource,
			RequestKind:     &kind,
			RequestResource: &resource,
			Name:            pod.Name,
			Namespace:       namespace,
			Operation:       admissionv1.Create,
			UserInfo:        authenticationv1.UserInfo{Username: "gatehouse:webhook-check"},
			Object:          runtime.RawExtension{Raw: raw},
			DryRun:          ptr.To(true),
		},
	}
}

// snippet is the start of a body, for error messages.
func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
