package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// brokerTransport carries the sidecar's requests to gatehouse broker, and
// nothing else: the IdP's discovery, keys and userinfo use another client,
// so the ServiceAccount token never reaches the IdP. It shows the token of
// --broker-token-file as a bearer token, read for every request because
// the kubelet rotates it (requests are rare: logins, refreshes, logouts),
// and trusts the CAs of --broker-ca-file as they are now: a CA rotation
// swaps in a new base transport.
type brokerTransport struct {
	tokenFile string
	base      atomic.Pointer[http.Transport]
}

// newBrokerTransport reads the CA file, if any; it does not read the
// token file, which may appear later.
func newBrokerTransport(tokenFile, caFile string) (*brokerTransport, error) {
	var roots *x509.CertPool
	if caFile != "" {
		var err error
		if roots, err = readCAFile(caFile); err != nil {
			return nil, err
		}
	}
	t := &brokerTransport{tokenFile: tokenFile}
	t.base.Store(newBrokerBase(roots))
	return t, nil
}

// client returns the HTTP client for broker requests. It follows no
// redirect, which would carry the bearer token elsewhere: a redirect is
// an answer the broker should not give, a failure like a 5xx.
func (t *brokerTransport) client() *http.Client {
	return &http.Client{
		Transport: t,
		Timeout:   15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// RoundTrip adds the bearer token and sends req. A token file that cannot
// be read fails the request as a network error would, so a login gets the
// IdP outage page and a refresh keeps the session and retries.
func (t *brokerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	token, err := readBrokerToken(t.tokenFile)
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close() // a RoundTripper closes the body, even on error
		}
		return nil, err
	}
	out := req.Clone(req.Context()) // a RoundTripper must not change req
	out.Header.Set("Authorization", "Bearer "+token)
	return t.base.Load().RoundTrip(out)
}

// setRoots makes new connections trust roots. Idle connections, verified
// against the previous CAs, are closed rather than reused.
func (t *brokerTransport) setRoots(roots *x509.CertPool) {
	t.base.Swap(newBrokerBase(roots)).CloseIdleConnections()
}

// newBrokerBase is the transport under brokerTransport: the standard
// library's defaults, with roots (nil: the system roots) as the only CAs.
func newBrokerBase(roots *x509.CertPool) *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// readBrokerToken reads the ServiceAccount token without surrounding
// whitespace. Its errors name the file.
func readBrokerToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read --broker-token-file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("--broker-token-file %s is empty", path)
	}
	return token, nil
}

// readCAFile reads a PEM bundle of CA certificates.
func readCAFile(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return roots, nil
}

// reloadBrokerCA re-reads --broker-ca-file after it changed (a CA rotation
// in the mounted Secret), so new connections to the broker trust the new
// bundle. A bad file is logged and the current CAs stay.
func (s *Server) reloadBrokerCA(ctx context.Context) {
	roots, err := readCAFile(s.cfg.BrokerCAFile)
	if err != nil {
		s.log.ErrorContext(ctx, "Broker CA file rejected; keeping the current CAs", "file", s.cfg.BrokerCAFile, "error", err)
		return
	}
	s.broker.setRoots(roots)
	s.log.InfoContext(ctx, "Broker CA file reloaded", "file", s.cfg.BrokerCAFile)
}
