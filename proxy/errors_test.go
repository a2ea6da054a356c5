package proxy

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gatehouse-dev/gatehouse/proxy/internal/oidcflow"
)

// TestFullUsedSetGives503: a login refused because the replica's set of
// used states is full is a 503 with Retry-After, never a 400 or a 500.
func TestFullUsedSetGives503(t *testing.T) {
	t.Parallel()
	s := &Server{cfg: DefaultConfig(), log: slog.New(slog.DiscardHandler), metrics: newMetrics()}
	for _, nav := range []bool{false, true} {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/_gatehouse/callback", nil)
		if nav {
			r.Header.Set("Accept", "text/html")
		}
		s.writeError(rec, r, &retryError{rd: "/", err: fmt.Errorf("take login: %w", oidcflow.ErrBusy)})
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
			t.Errorf("navigation %v: status %d, Retry-After %q, want 503 with Retry-After", nav, rec.Code, rec.Header().Get("Retry-After"))
		}
		if !nav && !strings.Contains(rec.Body.String(), `"logins_busy"`) {
			t.Errorf("body %s", rec.Body)
		}
	}
}
