package e2e_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/internal/demo"
)

// TestDemoGatewayAPI: make demo-gateway-api's set-up, the sample app behind
// an annotated HTTPRoute on a Gateway, gets the sidecar with the
// listener's host, and a browser navigation to it is sent to the IdP.
func TestDemoGatewayAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	d := startDemo(t, ctx, demo.Options{GatewayAPI: true})
	if !slices.ContainsFunc(d.SidecarArgs, func(a string) bool { return a == "--redirect-url=http://localhost/_gatehouse/callback" }) {
		t.Errorf("the injected sidecar's arguments %q lack the Gateway listener's host", d.SidecarArgs)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.URL, nil)
	req.Header.Set("Accept", "text/html")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	issuer, _ := url.Parse(d.IdP.Issuer)
	if resp.StatusCode != http.StatusFound || loc.Host != issuer.Host {
		t.Errorf("a navigation got %d to %q, want 302 to the IdP at %s", resp.StatusCode, loc, issuer.Host)
	}
}
