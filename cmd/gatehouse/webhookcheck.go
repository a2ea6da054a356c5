//go:build !sidecar

package main

import (
	"bytes"
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
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/utils/ptr"
)

const webhookCheckUsage = `Usage: gatehouse webhook-check --url URL --ca-file FILE [flags]

Calls the controller's Pod mutating webhook the way the API server does, with
a harmless AdmissionReview (a dry-run CREATE of an unlabelled Pod in a
namespace without Ingresses), trusting only the CA in --ca-file. It succeeds
only when the answer is an admission.k8s.io/v1 AdmissionReview that allows
the Pod under the request's UID. The chart's "helm test" runs it.

Flags:
`

// webhookCheckNamespace is the test Pod's default namespace: one that holds
// no Ingress, so the webhook has nothing to inject.
const webhookCheckNamespace = "gatehouse-webhook-check"

func runWebhookCheck(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("gatehouse webhook-check", flag.ContinueOnError)
	fs.SetOutput(stdout)
	rawURL := fs.String("url", "", "https `URL` of the webhook, e.g. https://gatehouse-webhook.gatehouse-system.svc:443/mutate-v1-pod (required)")
	caFile := fs.String("ca-file", "", "PEM `file` with the CA of the webhook's certificate, the ca.crt key of its Secret (required)")
	namespace := fs.String("namespace", webhookCheckNamespace, "`namespace` of the test Pod; one without Gatehouse Ingresses")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the answer")
	fs.Usage = flagUsage(fs, webhookCheckUsage)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	var errs []error
	if u, err := url.Parse(*rawURL); err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, fmt.Errorf("--url: %q is not an https URL", *rawURL))
	}
	if *caFile == "" {
		errs = append(errs, errors.New("--ca-file: required: the CA of the webhook's certificate"))
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

	pem, err := os.ReadFile(*caFile)
	if err != nil {
		return fmt.Errorf("--ca-file: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("--ca-file: %s holds no PEM certificate", *caFile)
	}
	hc := &http.Client{
		Timeout: *timeout,
		// No proxy from the environment: the webhook is cluster-internal.
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
	}
	uid := types.UID(uuid.NewUUID())
	if err := checkWebhook(ctx, hc, *rawURL, *namespace, uid); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Webhook %s allowed the test Pod (uid %s)\n", *rawURL, uid)
	return nil
}

// checkWebhook posts a review of a harmless Pod to the webhook at rawURL
// and returns nil only when the answer allows it under uid.
func checkWebhook(ctx context.Context, hc *http.Client, rawURL, namespace string, uid types.UID) error {
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
			return fmt.Errorf("call the webhook: its certificate is not trusted by --ca-file (is the caBundle's CA current, is it the webhook's Secret?): %w", err)
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
