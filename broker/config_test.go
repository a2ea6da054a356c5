package broker

import (
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	valid := DefaultConfig()
	valid.ConfigFile, valid.Namespace, valid.TLSCertDir = "providers.yaml", "gatehouse-system", "/tls"
	if err := valid.Validate(); err != nil {
		t.Fatalf("a complete configuration: %v", err)
	}
	tests := []struct {
		name   string
		change func(*Config)
		flags  []string // each problem names its flag
	}{
		{"defaults alone", func(c *Config) { *c = DefaultConfig() }, []string{"--config", "--namespace", "--tls-cert-dir"}},
		{"bad namespace", func(c *Config) { c.Namespace = "Gatehouse_System" }, []string{"--namespace"}},
		{"bad registry", func(c *Config) { c.Registry = "Not A Name" }, []string{"--registry"}},
		{"no audience", func(c *Config) { c.TokenAudience = "" }, []string{"--token-audience"}},
		{"bad addresses", func(c *Config) { c.ListenAddress, c.MetricsAddress = "8443", "localhost" }, []string{"--listen-address", "--metrics-address"}},
		{"shared address", func(c *Config) { c.HealthAddress = c.MetricsAddress }, []string{"--health-address"}},
		{"negative timeout", func(c *Config) { c.ShutdownTimeout = -time.Second }, []string{"--shutdown-timeout"}},
		{"no burst", func(c *Config) { c.KubeAPIBurst = 0 }, []string{"--kube-api-burst"}},
		{"no review burst", func(c *Config) { c.TokenReviewBurst = 0 }, []string{"--token-review-burst"}},
		{"log level", func(c *Config) { c.LogLevel = "loud" }, []string{"--log-level"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := valid
			tc.change(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			parts := err.(interface{ Unwrap() []error }).Unwrap()
			if len(parts) != len(tc.flags) {
				t.Errorf("%d problems, want %d: %v", len(parts), len(tc.flags), err)
			}
			for _, f := range tc.flags {
				if !strings.Contains(err.Error(), f+":") {
					t.Errorf("%v does not name %s", err, f)
				}
			}
		})
	}
	ephemeral := valid
	ephemeral.ListenAddress, ephemeral.MetricsAddress, ephemeral.HealthAddress = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	if err := ephemeral.Validate(); err != nil {
		t.Errorf("three ephemeral ports: %v", err)
	}
}
