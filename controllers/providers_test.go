package controllers

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestProviderChecker(t *testing.T) {
	t.Parallel()
	good := httptest.NewServer(nil)
	good.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `{"issuer":%q}`, good.URL)
	})
	defer good.Close()
	wrongIssuer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"issuer":"https://elsewhere.example"}`)
	}))
	defer wrongIssuer.Close()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer down.Close()
	file := &FileConfig{Providers: []Provider{
		{Name: "good", IssuerURL: good.URL}, {Name: "wrong", IssuerURL: wrongIssuer.URL}, {Name: "down", IssuerURL: down.URL},
	}}
	m := newMetrics(prometheus.NewRegistry())
	c := &providerChecker{file: file, client: good.Client(), metrics: m, log: logr.Discard()}
	c.checkAll(t.Context())
	for name, want := range map[string]float64{"good": 1, "wrong": 0, "down": 0} {
		if got := testutil.ToFloat64(m.providerOK.WithLabelValues(name)); got != want {
			t.Errorf("provider %s: gauge %v, want %v", name, got, want)
		}
	}
	rec := httptest.NewRecorder()
	c.serveStatus(rec, httptest.NewRequest(http.MethodGet, "/providers", nil))
	var status map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &status); err != nil {
		t.Fatal(err)
	}
	if status["good"] != "ok" || status["wrong"] == "ok" || status["down"] == "ok" {
		t.Errorf("/providers = %v", status)
	}
}
