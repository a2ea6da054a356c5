package e2e_test

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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
	ports := make([]int, 4)
	for i := range ports {
		_, p, _ := net.SplitHostPort(freeAddr(t))
		ports[i], _ = strconv.Atoi(p)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	d, err := demo.Start(ctx, demo.Options{
		Root: root, Bin: filepath.Dir(binary), Out: &progress, GatewayAPI: true,
		ProxyPort: ports[0], AppPort: ports[1], IdPPort: ports[2], MetricsPort: ports[3],
	})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, progress.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("progress:\n%s\ncontroller log:\n%s", progress.String(), d.Logs("controller"))
		}
		if err := d.Stop(); err != nil {
			t.Errorf("stop the demo: %v", err)
		}
	})
	if !strings.Contains(progress.String(), "HTTPRoute demo/hello") {
		t.Errorf("the demo did not show its HTTPRoute:\n%s", progress.String())
	}
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
